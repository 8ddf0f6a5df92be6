#!/usr/bin/env node
import { startLocalNetwork } from "../local-network.js";
import { parseOptions, USAGE, UsageError } from "../options.js";

const say = (line: string) => process.stderr.write(`darkbloom-local: ${line}\n`);

let options: ReturnType<typeof parseOptions>;
try {
  options = parseOptions(process.argv.slice(2));
} catch (e) {
  if (e instanceof UsageError) {
    say(e.message);
    process.exit(64);
  }
  throw e;
}
if (options.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

// Signals are handled from the first moment: Ctrl-C while the network starts stops what was started
// (rather than killing this process and orphaning its children); a second one while stopping is
// ignored with a note, since stopping is already under way.
const starting = new AbortController();
let network: Awaited<ReturnType<typeof startLocalNetwork>> | undefined;
let stopping = false;
const shutdown = async (why: string, code: number) => {
  if (stopping) {
    if (why.startsWith("SIG")) say(`${why}: already stopping`);
    return;
  }
  stopping = true;
  say(`${why}: stopping`);
  if (!network) {
    starting.abort(new Error(why));
    return; // the failed start stops what it started, then exits below
  }
  await network.stop();
  process.exit(code);
};
process.on("SIGINT", () => void shutdown("SIGINT", 0));
process.on("SIGTERM", () => void shutdown("SIGTERM", 0));

try {
  network = await startLocalNetwork({ ...options, log: say, signal: starting.signal });
} catch (e) {
  if (starting.signal.aborted) process.exit(130);
  say(e instanceof Error ? e.message : String(e));
  process.exit(1);
}
if (stopping) {
  // The signal came as the start completed: stop what is running now.
  await network.stop();
  process.exit(130);
}
void network.failed.then((reason) => shutdown(reason, 1));
process.stdout.write(
  `READY base_url=${network.baseUrl} api_key=${network.apiKey} admin_key=${network.adminKey}\n`,
);
