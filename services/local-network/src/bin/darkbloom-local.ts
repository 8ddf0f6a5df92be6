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

let network: Awaited<ReturnType<typeof startLocalNetwork>>;
try {
  network = await startLocalNetwork({ ...options, log: say });
} catch (e) {
  say(e instanceof Error ? e.message : String(e));
  process.exit(1);
}

let stopping = false;
const shutdown = async (why: string, code: number) => {
  if (stopping) return;
  stopping = true;
  say(`${why}: stopping`);
  await network.stop();
  process.exit(code);
};
process.once("SIGINT", () => void shutdown("SIGINT", 0));
process.once("SIGTERM", () => void shutdown("SIGTERM", 0));
void network.failed.then((reason) => shutdown(reason, 1));
process.stdout.write(
  `READY base_url=${network.baseUrl} api_key=${network.apiKey} admin_key=${network.adminKey}\n`,
);
