// `npm run bench:load -- [options]`: load the whole network and report throughput, latencies and the
// coordinator's X-Timing phases (see USAGE in options.ts and docs/BENCHMARKS.md).
// Exit: 0 every assertion passed, 1 one failed, 2 network not started/reached, 64 bad flag, 130 interrupted.
import { evaluateAssertions } from "./assertions.js";
import { NetworkError, openTarget, type Target } from "./network.js";
import { type LoadOptions, parseOptions, USAGE, UsageError } from "./options.js";
import { progressLine } from "./progress.js";
import { assertionsPassed, type Report, renderJson, renderText } from "./report.js";
import { runLoadTest } from "./runner.js";

const progress = progressLine(process.stderr);
const say = (line: string) => {
  progress.clear();
  process.stderr.write(`bench:load: ${line}\n`);
};
const message = (e: unknown) => (e instanceof Error ? e.message : String(e));

async function write(text: string): Promise<void> {
  await new Promise<void>((resolve) => process.stdout.write(text, () => resolve()));
}

let options: LoadOptions;
try {
  options = parseOptions(process.argv.slice(2));
} catch (e) {
  if (!(e instanceof UsageError)) throw e;
  say(e.message);
  process.exit(64);
}
if (options.help) {
  await write(USAGE);
  process.exit(0);
}

const stop = new AbortController();
let target: Target | undefined;
let firstInterrupt: number | undefined;
const onSignal = (signal: NodeJS.Signals) => {
  const now = performance.now();
  // A terminal's Ctrl-C can reach this process twice (directly and forwarded by npm): a repeat within
  // a second is the same one.
  if (firstInterrupt !== undefined && now - firstInterrupt < 1_000) return;
  if (firstInterrupt !== undefined) {
    // The network's processes get SIGTERM as this one exits (services/local-network/src/child.ts).
    const left = target?.dataDir ? `; remove ${target.dataDir} when they are gone` : "";
    say(`${signal} again: quitting now${left}`);
    process.exit(130);
  }
  firstInterrupt = now;
  say(`${signal}: stopping (${signal} again to quit at once)`);
  stop.abort();
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);

try {
  target = await openTarget({
    baseUrl: options.baseUrl,
    apiKeys: options.apiKeys,
    adminKey: options.adminKey,
    users: options.users,
    providers: options.providers,
    model: options.model,
    log: say,
  });
} catch (e) {
  say(message(e));
  process.exit(e instanceof NetworkError ? 2 : 1);
}

let exitCode = 1;
let networkFailure: string | undefined;
let running = true;
void target.failed?.then((reason) => {
  if (!running) return;
  networkFailure = reason;
  stop.abort();
});
try {
  if (!stop.signal.aborted) {
    const result = await runLoadTest({
      baseUrl: target.baseUrl,
      apiKeys: target.apiKeys,
      model: options.model,
      concurrency: options.concurrency,
      total: options.total,
      durationMs: options.durationMs,
      stream: options.stream,
      promptTokens: options.promptTokens,
      maxTokens: options.maxTokens,
      warmup: options.warmup,
      timeoutMs: options.timeoutMs,
      signal: stop.signal,
      onProgress: (p) => progress.update(p),
    });
    progress.clear();
    if (networkFailure !== undefined) {
      say(`the network failed during the run: ${networkFailure}`);
      exitCode = 2;
    } else {
      const assertions = evaluateAssertions(options.assertions, result.summary);
      const report: Report = {
        scenario: {
          target: target.description,
          providers: target.providers,
          users: target.apiKeys.length,
          concurrency: options.concurrency,
          total: options.total,
          durationMs: options.durationMs,
          stream: options.stream,
          model: options.model,
          promptTokens: options.promptTokens,
          maxTokens: options.maxTokens,
          warmup: options.warmup,
          timeoutMs: options.timeoutMs,
        },
        summary: result.summary,
        interrupted: result.interrupted,
        cpuPressure: result.cpuPressure,
        assertions,
      };
      await write(options.json ? `${JSON.stringify(renderJson(report), null, 2)}\n` : renderText(report));
      exitCode = result.interrupted ? 130 : assertionsPassed(assertions) ? 0 : 1;
    }
  } else {
    exitCode = 130;
  }
} catch (e) {
  say(`failed: ${message(e)}`);
  exitCode = 1;
} finally {
  running = false;
  progress.clear();
  try {
    await target.close();
  } catch (e) {
    say(`could not stop the network cleanly: ${message(e)}`);
  }
}
process.exit(exitCode);
