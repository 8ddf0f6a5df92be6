import { Code, ConnectError } from "@connectrpc/connect";
import { PROTOCOL_VERSION } from "@darkbloom/protocol";
import type { Register } from "@darkbloom/protocol/provider/v1";
import { RESPONSE_SIGNATURE_VERSION } from "@darkbloom/protocol/verifiable-response";

const MODEL_ID = /^[A-Za-z0-9._:/-]{1,128}$/;
const MAX_MODELS = 256;
const MAX_BATCH = 4096;
/** Far above the features there are: a bound on what a Register can make the coordinator hold. */
const MAX_FEATURES = 16;

/** Rejects a Register the coordinator cannot work with, naming the field. */
export function validateRegister(r: Register): void {
  const fail = (message: string): never => {
    throw new ConnectError(`invalid Register: ${message}`, Code.InvalidArgument);
  };
  if (r.protocolVersion !== PROTOCOL_VERSION) {
    throw new ConnectError(
      `unsupported protocol_version ${r.protocolVersion}; this coordinator speaks ${PROTOCOL_VERSION}`,
      Code.FailedPrecondition,
    );
  }
  // A provider with a signing key signs every response, and a version 1 signature covers only the
  // texts: a consumer could not tell its usage, finish reasons, model or provider id from forgeries.
  // Refused here, not per response, so an old daemon is told at once and never gets traffic.
  if (
    (r.attestation?.publicKey.length ?? 0) > 0 &&
    r.responseSignatureVersion !== RESPONSE_SIGNATURE_VERSION
  ) {
    throw new ConnectError(
      `response_signature_version ${r.responseSignatureVersion} is not supported; this coordinator ` +
        `requires response signatures version ${RESPONSE_SIGNATURE_VERSION}: update the daemon`,
      Code.FailedPrecondition,
    );
  }
  if (r.models.length === 0) fail("models is empty; a provider must serve at least one model");
  if (r.models.length > MAX_MODELS) fail(`models lists ${r.models.length} entries, more than ${MAX_MODELS}`);
  const seen = new Set<string>();
  for (const m of r.models) {
    if (!MODEL_ID.test(m.id))
      fail(`model id ${JSON.stringify(m.id)} is not 1-128 characters of [A-Za-z0-9._:/-]`);
    if (seen.has(m.id)) fail(`model ${m.id} is listed twice`);
    if (m.features.length > MAX_FEATURES) fail(`model ${m.id} lists more than ${MAX_FEATURES} features`);
    seen.add(m.id);
  }
  const maxBatch = r.capacity?.maxBatch ?? 0;
  if (maxBatch < 1 || maxBatch > MAX_BATCH) fail(`capacity.max_batch ${maxBatch} is outside 1..${MAX_BATCH}`);
  if (r.encryptionPublicKey.length !== 0 && r.encryptionPublicKey.length !== 32) {
    fail(`encryption_public_key has ${r.encryptionPublicKey.length} bytes, expected 32`);
  }
  if (r.machineId.length > 256) fail("machine_id is longer than 256 characters");
}
