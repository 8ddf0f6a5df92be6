import type { MessageInitShape } from "@bufbuild/protobuf";
import type { SealedBoxSchema } from "@darkbloom/protocol/provider/v1";
import { type BoxKey, BoxKeyPair } from "@darkbloom/protocol/sealed-box";

/** A request body sealed for one dispatch, and the key its chunks must be sealed with. */
export interface SealedRequest {
  box: MessageInitShape<typeof SealedBoxSchema>;
  /** The request's box key (secure memory): opens the provider's chunks; wipe it when the request ends. */
  key: BoxKey;
}

/**
 * Seals a request body to the provider's X25519 key with a fresh ephemeral key pair (NaCl box). The
 * ephemeral secret is wiped as soon as the box key is derived from it; the provider answers with
 * chunks sealed to the ephemeral public key, which the returned key opens. Throws SealedBoxError for
 * an unusable provider key.
 */
export function sealRequest(providerKey: Uint8Array, body: Uint8Array): SealedRequest {
  const ephemeral = ephemeralKeys.take();
  let key: BoxKey;
  try {
    key = ephemeral.keyFor(providerKey);
  } finally {
    ephemeral.wipe();
  }
  const { nonce, ciphertext } = key.seal(body);
  return { box: { senderPublicKey: ephemeral.publicKey, nonce, ciphertext }, key };
}

/** Key pairs generated ahead of use, at most this many. */
const READY_KEY_PAIRS = 16;
/** Generated per event-loop turn while refilling, so that no turn pauses long. */
const PER_TURN = 4;

/**
 * Fresh ephemeral key pairs, generated in turns of the event loop just before they are needed (the
 * key generation, a third of a dispatch's sealing cost, leaves the request path). Each key pair is
 * used for one dispatch only and wiped at once; the waiting ones sit in sodium secure memory.
 */
class EphemeralKeys {
  private readonly ready: BoxKeyPair[] = [];
  private refilling = false;

  take(): BoxKeyPair {
    const pair = this.ready.pop() ?? BoxKeyPair.generate();
    this.refill();
    return pair;
  }

  private refill(): void {
    if (this.refilling || this.ready.length >= READY_KEY_PAIRS) return;
    this.refilling = true;
    setImmediate(() => {
      this.refilling = false;
      for (let i = 0; i < PER_TURN && this.ready.length < READY_KEY_PAIRS; i++) {
        this.ready.push(BoxKeyPair.generate());
      }
      this.refill();
    });
  }
}

const ephemeralKeys = new EphemeralKeys();
