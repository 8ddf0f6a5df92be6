// The web console: its files, as the coordinator serves them under /console, and the headers they
// are served with.
export { CONSOLE_CSP, type ConsoleAsset, consoleHeaders, loadConsole } from "./assets.js";
