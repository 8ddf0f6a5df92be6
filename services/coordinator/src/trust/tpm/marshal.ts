import { TpmFormatError } from "./errors.js";

/**
 * Reads TPM marshalled structures (big-endian, TPM2B = 2-byte size then the bytes) with bounds checks:
 * every read past the end, and every byte left over at done(), is a TpmFormatError naming the structure.
 */
export class TpmReader {
  private offset = 0;
  private readonly view: DataView;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly structure: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private take(n: number, what: string): number {
    if (this.offset + n > this.bytes.length) {
      throw new TpmFormatError(`${this.structure}: truncated at ${what} (offset ${this.offset})`);
    }
    const at = this.offset;
    this.offset += n;
    return at;
  }

  u8(what: string): number {
    return this.view.getUint8(this.take(1, what));
  }

  u16(what: string): number {
    return this.view.getUint16(this.take(2, what));
  }

  u32(what: string): number {
    return this.view.getUint32(this.take(4, what));
  }

  u64(what: string): bigint {
    return this.view.getBigUint64(this.take(8, what));
  }

  bytesOf(n: number, what: string): Uint8Array {
    const at = this.take(n, what);
    return this.bytes.slice(at, at + n);
  }

  /** A TPM2B: its size, then that many bytes, at most `max`. */
  tpm2b(what: string, max: number): Uint8Array {
    const size = this.u16(what);
    if (size > max) throw new TpmFormatError(`${this.structure}: ${what} of ${size} bytes (at most ${max})`);
    return this.bytesOf(size, what);
  }

  /** Fails on trailing bytes: a structure with something appended is not the structure that was signed or named. */
  done(): void {
    if (this.offset !== this.bytes.length) {
      throw new TpmFormatError(`${this.structure}: ${this.bytes.length - this.offset} trailing bytes`);
    }
  }
}

/** A TPM2B: the 2-byte big-endian size, then the bytes. */
export function tpm2b(bytes: Uint8Array): Uint8Array {
  if (bytes.length > 0xffff) throw new RangeError(`a TPM2B holds at most 65535 bytes, not ${bytes.length}`);
  const out = new Uint8Array(2 + bytes.length);
  new DataView(out.buffer).setUint16(0, bytes.length);
  out.set(bytes, 2);
  return out;
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
