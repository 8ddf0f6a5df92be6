// The web console: its files, as the coordinator serves them under /console, and the headers they
// are served with.
export { type Console, type ConsoleAsset, consoleCsp, loadConsole } from "./assets.js";
