import { userInfo } from "node:os";
import {
  GetMachineBindingResponseSchema,
  type KeyQuarantine,
  LiftKeyQuarantineResponseSchema,
  type MachineRebind,
  RebindMachineResponseSchema,
} from "@darkbloom/protocol/admin/v1";
import { type Command, InvalidArgumentError } from "commander";
import { type AdminCommands, protoJson } from "./admin-call.js";
import { fields, table, time } from "./format.js";
import type { CliIo } from "./io.js";

const HEX_KEY = /^04[0-9a-f]{128}$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * `admin machines …`: which attestation signing key each machine id is bound to (and whether that key
 * is quarantined), re-binding one to another key, and lifting a key's quarantine early (both audited:
 * a reason is required and recorded with who did it).
 */
export function addMachineCommands(admin: Command, cli: AdminCommands, io: CliIo): void {
  const machines = cli.group(admin, "machines", "machine ids and the signing keys they are bound to");
  cli
    .command(machines, "show", "the signing key a machine id is bound to, and its re-binds", async (call) => {
      const response = await call.client.getMachineBinding({ machineId: call.args[0] as string });
      const binding = response.binding;
      call.print(
        () => protoJson(GetMachineBindingResponseSchema, response),
        () =>
          fields([
            ["machine id", binding?.machineId ?? ""],
            ["public key", hex(binding?.publicKey)],
            ["first attested", time(binding?.firstAttestedAt)],
            ["last seen", time(binding?.lastSeenAt)],
            ["quarantined", quarantined(response.quarantine)],
          ]) +
          (response.rebinds.length === 0
            ? "re-binds: none\n"
            : `re-binds (newest first):\n${table(["WHEN", "ACTOR", "OLD KEY", "NEW KEY", "REASON"], response.rebinds.map(rebindRow))}`),
      );
    })
    .argument("<machine-id>");

  cli
    .command(
      machines,
      "rebind",
      "bind a machine id to another signing key; the old key's sessions are disconnected",
      async (call) => {
        const response = await call.client.rebindMachine({
          machineId: call.args[0] as string,
          publicKey: call.opts.publicKey as Uint8Array,
          reason: call.opts.reason as string,
          actor: (call.opts.actor as string | undefined) ?? defaultActor(io),
        });
        const rebind = response.rebind;
        call.print(
          () => protoJson(RebindMachineResponseSchema, response),
          () =>
            fields([
              ["machine id", rebind?.machineId ?? ""],
              ["public key", hex(rebind?.newPublicKey)],
              ["previous key", hex(rebind?.oldPublicKey) || "(none: it was not bound)"],
              ["reason", rebind?.reason ?? ""],
              ["actor", rebind?.actor ?? ""],
              ["re-bound at", time(rebind?.reboundAt)],
              ["disconnected", `${response.disconnectedSessions} session(s) of the previous key here`],
            ]),
        );
      },
    )
    .argument("<machine-id>")
    .requiredOption(
      "--public-key <key>",
      "the new SEC1 P-256 public key: 130 hex digits starting 04, or its base64 as GET /v1/providers/attestation publishes it",
      publicKey,
    )
    .requiredOption("--reason <text>", "why (recorded with the re-bind)", text("reason", 1000))
    .option("--actor <name>", "who re-binds, recorded (default: $USER)", text("actor", 256));

  cli
    .command(
      machines,
      "lift-quarantine",
      "end a signing key's quarantine early; its sessions are trusted again once they reconnect",
      async (call) => {
        const response = await call.client.liftKeyQuarantine({
          publicKey: call.args[0] as Uint8Array,
          reason: call.opts.reason as string,
          actor: (call.opts.actor as string | undefined) ?? defaultActor(io),
        });
        const lift = response.lift;
        call.print(
          () => protoJson(LiftKeyQuarantineResponseSchema, response),
          () =>
            fields([
              ["public key", hex(lift?.publicKey)],
              ["lifted", `${lift?.code ?? ""}: ${lift?.message ?? ""}`],
              ["would have ended", time(lift?.until)],
              ["reason", lift?.reason ?? ""],
              ["actor", lift?.actor ?? ""],
              ["lifted at", time(lift?.liftedAt)],
            ]),
        );
      },
    )
    .argument(
      "<public-key>",
      "the SEC1 P-256 public key: 130 hex digits starting 04, or its base64 as GET /v1/providers/attestation publishes it",
      publicKey,
    )
    .requiredOption("--reason <text>", "why (recorded with the lift)", text("reason", 1000))
    .option("--actor <name>", "who lifts it, recorded (default: $USER)", text("actor", 256));
}

/** A commander argument parser for a SEC1 uncompressed P-256 public key in hex or base64. */
export function publicKey(value: string): Uint8Array {
  const trimmed = value.trim();
  const lower = trimmed.toLowerCase();
  if (HEX_KEY.test(lower)) return new Uint8Array(Buffer.from(lower, "hex"));
  const bytes = BASE64.test(trimmed) ? Buffer.from(trimmed, "base64") : Buffer.alloc(0);
  if (bytes.length === 65 && bytes[0] === 0x04) return new Uint8Array(bytes);
  throw new InvalidArgumentError(
    "expected a SEC1 uncompressed P-256 public key: 130 hex digits starting 04, or the base64 of its 65 bytes",
  );
}

function text(name: string, max: number): (value: string) => string {
  return (value) => {
    const trimmed = value.trim();
    if (trimmed === "" || trimmed.length > max) {
      throw new InvalidArgumentError(`expected a non-empty ${name} of at most ${max} characters`);
    }
    return trimmed;
  };
}

function defaultActor(io: CliIo): string {
  return io.env.USER || io.env.LOGNAME || userInfo().username;
}

function hex(key: Uint8Array | undefined): string {
  return key && key.length > 0 ? Buffer.from(key).toString("hex") : "";
}

function quarantined(q: KeyQuarantine | undefined): string {
  return q ? `until ${time(q.until)} (${q.code}: ${q.message})` : "no";
}

function rebindRow(r: MachineRebind): string[] {
  const short = (key: Uint8Array) => (key.length > 0 ? `${hex(key).slice(2, 14)}…` : "-");
  return [time(r.reboundAt), r.actor, short(r.oldPublicKey), short(r.newPublicKey), r.reason];
}
