import { describe, expect, it } from "vitest";
import { commandGroup } from "./command-group.js";
import { CliFailure, ExitCode, UsageError } from "./io.js";
import { createProgram, runProgram } from "./program.js";
import { testIo } from "./testing.js";

function program(io: ReturnType<typeof testIo>["io"]) {
  const p = createProgram(io, { name: "prog", description: "a test program", version: "1.2.3" });
  const group = commandGroup(p, "things", "things to do");
  group.command("fail").action(() => {
    throw new CliFailure("it failed\nbadly", ExitCode.unavailable);
  });
  group.command("quiet").action(() => {
    throw new CliFailure("", 3);
  });
  group.command("usage").action(() => {
    throw new UsageError("bad\n  input");
  });
  group.command("crash").action(() => {
    throw new TypeError("boom");
  });
  group
    .command("ok <name>")
    .option("--loud")
    .action((name: string, opts: { loud?: boolean }) => io.stdout(`${opts.loud ? "HI" : "hi"} ${name}\n`));
  return p;
}

async function run(argv: string[]) {
  const t = testIo();
  const code = await runProgram(program(t.io), argv, t.io);
  return { code, stdout: t.stdout(), stderr: t.stderr() };
}

describe("runProgram", () => {
  it("exits 0 for a command that ran, --help and --version", async () => {
    expect(await run(["things", "ok", "ada", "--loud"])).toEqual({ code: 0, stdout: "HI ada\n", stderr: "" });
    expect((await run(["--version"])).stdout).toBe("1.2.3\n");
    const help = await run(["things", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("things to do");
  });

  it("exits 64 with one line for usage errors, its own or commander's", async () => {
    expect(await run(["things", "usage"])).toEqual({ code: 64, stdout: "", stderr: "prog: bad input\n" });
    expect(await run(["things"])).toEqual({
      code: 64,
      stdout: "",
      stderr: "prog: things: missing command (expected one of: fail, quiet, usage, crash, ok)\n",
    });
    expect((await run(["thing"])).stderr).toBe("prog: unknown command 'thing' (expected one of: things)\n");
    const missing = await run(["things", "ok"]);
    expect(missing.code).toBe(64);
    expect(missing.stderr).toBe("prog: missing required argument 'name'\n");
    expect((await run(["things", "ok", "x", "--bogus"])).stderr).toBe("prog: unknown option '--bogus'\n");
  });

  it("exits with a CliFailure's status (its message on one line, if any), 1 for anything else", async () => {
    expect(await run(["things", "fail"])).toEqual({
      code: 69,
      stdout: "",
      stderr: "prog: it failed badly\n",
    });
    expect(await run(["things", "quiet"])).toEqual({ code: 3, stdout: "", stderr: "" });
    expect(await run(["things", "crash"])).toEqual({ code: 1, stdout: "", stderr: "prog: boom\n" });
  });
});
