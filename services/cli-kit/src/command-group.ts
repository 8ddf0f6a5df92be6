import type { Command } from "commander";
import { UsageError } from "./io.js";

/** A new subcommand of `parent` that only holds subcommands (see asCommandGroup). */
export function commandGroup(parent: Command, name: string, description: string): Command {
  return asCommandGroup(parent.command(name).description(description));
}

/**
 * Makes `command` a holder of subcommands: run bare or with an unknown subcommand it fails with one
 * line naming the choices, instead of commander's multi-line help on stderr.
 */
export function asCommandGroup(command: Command): Command {
  return command
    .usage("[command]")
    .helpCommand(true) // commander adds it on its own only to commands without an action
    .argument("[command]")
    .argument("[arguments...]") // not allowExcessArguments(): subcommands would inherit it
    .action((unknown: string | undefined) => {
      const choices = command.commands.map((sub) => sub.name()).filter((name) => name !== "help");
      const path = commandPath(command);
      const problem = unknown === undefined ? "missing command" : `unknown command '${unknown}'`;
      throw new UsageError(`${path ? `${path}: ` : ""}${problem} (expected one of: ${choices.join(", ")})`);
    });
}

/** "admin accounts" for the command `darkbloom-coordinator admin accounts`. */
export function commandPath(command: Command): string {
  const names: string[] = [];
  for (let current: Command | null = command; current?.parent; current = current.parent)
    names.unshift(current.name());
  return names.join(" ");
}
