import type { AttestationChallenge } from "@darkbloom/protocol/provider/v1";
import { attestationResponseMessage } from "@darkbloom/protocol/provider-client";
import type { Logger } from "pino";
import type { Engine, ModelFile } from "../engine/engine.js";
import { engineStats } from "./heartbeats.js";
import type { LinkAttestor } from "./options.js";
import type { Session } from "./session.js";

/**
 * Answers the coordinator's attestation challenge: the attestor signs the nonce with the machine's
 * state and the weight hashes of the models loaded now, which the coordinator checks against the ones
 * registered. A provider without an attestation key stays silent (it is trust none anyway).
 */
export async function answerChallenge(
  session: Session,
  challenge: AttestationChallenge,
  attestor: LinkAttestor | undefined,
  engine: Engine,
  served: ReadonlyMap<string, ModelFile>,
  log: Logger,
): Promise<void> {
  if (!attestor) {
    log.debug("attestation challenge ignored: this provider has no attestation key");
    return;
  }
  const models = engineStats(engine, log)
    .loadedModels.map((id) => served.get(id))
    .filter((m): m is ModelFile => m !== undefined)
    .map((m) => ({ id: m.id, sha256: m.sha256 }));
  try {
    const response = await attestor.respond(challenge, models);
    if (!session.ended) session.outbound.send(attestationResponseMessage(response));
  } catch (error) {
    log.warn({ err: (error as Error).message }, "could not answer an attestation challenge");
  }
}
