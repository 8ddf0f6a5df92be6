import { open, stat } from "node:fs/promises";
import type { Command } from "commander";
import type { CliContext } from "./context.js";
import { CliFailure, UsageError } from "./io.js";
import { addSettingOptions, resolveFromOptions } from "./settings-options.js";

const POLL_MS = 250;

/** `logs`: the last lines of the daemon's log file, and with --follow what it appends. */
export function addLogsCommand(program: Command, context: CliContext): void {
  const command = program.command("logs").description("print the daemon's log (the service writes it)");
  addSettingOptions(command, ["dataDir"]);
  command
    .option("-n, --lines <n>", "number of lines from the end (default 50)")
    .option("-f, --follow", "keep printing what is appended, until interrupted")
    .action(async (opts: Record<string, unknown>) => {
      const linesText = typeof opts.lines === "string" ? opts.lines : "50";
      if (!/^\d+$/.test(linesText)) throw new UsageError(`--lines must be a whole number (got ${linesText})`);
      const { config } = resolveFromOptions(opts, context);
      const path = config.logFile;
      let size: number;
      try {
        size = (await stat(path)).size;
      } catch {
        throw new CliFailure(
          `no log file at ${path} (the daemon writes it when it runs as a service: darkbloom start)`,
        );
      }
      context.io.stdout(await tail(path, size, Number(linesText)));
      if (!opts.follow) return;
      await follow(path, size, context);
    });
}

/** The last `lines` lines of the first `size` bytes of a file. */
export async function tail(path: string, size: number, lines: number): Promise<string> {
  if (lines === 0 || size === 0) return "";
  const handle = await open(path, "r");
  try {
    const chunk = 64 * 1024;
    let position = size;
    let text = "";
    while (position > 0) {
      const length = Math.min(chunk, position);
      position -= length;
      const buffer = Buffer.alloc(length);
      await handle.read(buffer, 0, length, position);
      text = buffer.toString("utf8") + text;
      const count = text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
      if (count > lines) break;
    }
    const all = text.endsWith("\n") ? text.slice(0, -1).split("\n") : text.split("\n");
    return `${all.slice(-lines).join("\n")}\n`;
  } finally {
    await handle.close();
  }
}

/** Prints what is appended to the file from `offset` on (starting over if it is truncated) until a signal. */
async function follow(path: string, offset: number, context: CliContext): Promise<void> {
  let position = offset;
  let stopped = false;
  void context.io.shutdownSignal().then(() => {
    stopped = true;
  });
  while (!stopped) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    let size: number;
    try {
      size = (await stat(path)).size;
    } catch {
      continue; // rotated away: wait for it to come back
    }
    if (size < position) position = 0;
    if (size === position) continue;
    const handle = await open(path, "r");
    try {
      const buffer = Buffer.alloc(size - position);
      await handle.read(buffer, 0, buffer.length, position);
      position = size;
      context.io.stdout(buffer.toString("utf8"));
    } finally {
      await handle.close();
    }
  }
}
