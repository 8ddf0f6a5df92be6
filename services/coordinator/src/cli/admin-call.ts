import { type DescMessage, type MessageShape, toJson } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import type { AdminService } from "@darkbloom/protocol/admin/v1";
import type { Command } from "commander";

/** What an admin command's handler gets: the client, its arguments and options, and output. */
export interface AdminCall {
  client: Client<typeof AdminService>;
  /** Positional arguments after commander's parsing. */
  args: unknown[];
  opts: Record<string, unknown>;
  /** Writes `json()` as one JSON document with --json, else `text()`. */
  print(json: () => unknown, text: () => string): void;
}

/** How each command group file (admin-<group>.ts) adds its commands. */
export interface AdminCommands {
  /** A group of admin commands under `parent`; it takes --url, --admin-key and --json as well. */
  group(parent: Command, name: string, description: string): Command;
  /** An admin command in `group` (with --url, --admin-key and --json) that runs `handler`. */
  command(
    group: Command,
    name: string,
    description: string,
    handler: (call: AdminCall) => Promise<void>,
  ): Command;
}

/** A response message as JSON with the proto field names, every field present. */
export function protoJson<Desc extends DescMessage>(
  schema: Desc,
  message: MessageShape<Desc> | undefined,
): unknown {
  return message === undefined
    ? null
    : toJson(schema, message, { useProtoFieldName: true, alwaysEmitImplicit: true });
}
