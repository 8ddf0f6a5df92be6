/**
 * A vocabulary's lookups in typed arrays: token text → id, and merge (left id, right id) → rank and
 * merged id. A 150k-token vocabulary held as Maps of strings is about 90 MB of small heap objects
 * that every major garbage collection of the coordinator marks again; here it is one string, a few
 * typed arrays (outside the collected heap) and no per-token objects.
 */

function fnv1a(text: string, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function capacityFor(n: number): number {
  let c = 16;
  while (c < n * 2) c *= 2;
  return c;
}

/** Token texts by id, and ids by text (open addressing; a repeated text maps to its last id). */
export class TokenTable {
  private readonly text: string;
  private readonly offsets: Uint32Array;
  private readonly slots: Int32Array;
  private readonly mask: number;

  constructor(tokens: readonly string[]) {
    this.text = tokens.join("");
    this.offsets = new Uint32Array(tokens.length + 1);
    let at = 0;
    for (let i = 0; i < tokens.length; i++) {
      this.offsets[i] = at;
      at += (tokens[i] as string).length;
    }
    this.offsets[tokens.length] = at;
    this.slots = new Int32Array(capacityFor(tokens.length)).fill(-1);
    this.mask = this.slots.length - 1;
    for (let id = 0; id < tokens.length; id++) {
      const start = this.offsets[id] as number;
      const end = this.offsets[id + 1] as number;
      let slot = fnv1a(this.text, start, end) & this.mask;
      for (;;) {
        const other = this.slots[slot] as number;
        if (other < 0 || this.equals(other, this.text, start, end)) {
          this.slots[slot] = id;
          break;
        }
        slot = (slot + 1) & this.mask;
      }
    }
  }

  get size(): number {
    return this.offsets.length - 1;
  }

  textOf(id: number): string {
    return this.text.slice(this.offsets[id], this.offsets[id + 1]);
  }

  /** The id of the token whose text is `s` (or s.slice(start, end)), or -1. */
  id(s: string, start = 0, end = s.length): number {
    let slot = fnv1a(s, start, end) & this.mask;
    for (;;) {
      const id = this.slots[slot] as number;
      if (id < 0) return -1;
      if (this.equals(id, s, start, end)) return id;
      slot = (slot + 1) & this.mask;
    }
  }

  private equals(id: number, s: string, start: number, end: number): boolean {
    const from = this.offsets[id] as number;
    const length = (this.offsets[id + 1] as number) - from;
    if (length !== end - start) return false;
    for (let i = 0; i < length; i++)
      if (this.text.charCodeAt(from + i) !== s.charCodeAt(start + i)) return false;
    return true;
  }
}

/** Merges by the ids of their halves: the rank (lower merges first) and the id of the merged token. */
export class MergeTable {
  private readonly left: Int32Array;
  private readonly right: Int32Array;
  private readonly rank: Int32Array;
  private readonly merged: Int32Array;
  private readonly mask: number;

  constructor(count: number) {
    const capacity = capacityFor(count);
    this.left = new Int32Array(capacity).fill(-1);
    this.right = new Int32Array(capacity);
    this.rank = new Int32Array(capacity);
    this.merged = new Int32Array(capacity);
    this.mask = capacity - 1;
  }

  /** Adds a merge unless the pair has one already (llama.cpp keeps a pair's first rank). */
  add(left: number, right: number, rank: number, merged: number): void {
    let slot = this.slot(left, right);
    for (;;) {
      const l = this.left[slot] as number;
      if (l < 0) {
        this.left[slot] = left;
        this.right[slot] = right;
        this.rank[slot] = rank;
        this.merged[slot] = merged;
        return;
      }
      if (l === left && this.right[slot] === right) return;
      slot = (slot + 1) & this.mask;
    }
  }

  /** The pair's slot, or -1 when the pair does not merge. */
  find(left: number, right: number): number {
    let slot = this.slot(left, right);
    for (;;) {
      const l = this.left[slot] as number;
      if (l < 0) return -1;
      if (l === left && this.right[slot] === right) return slot;
      slot = (slot + 1) & this.mask;
    }
  }

  rankAt(slot: number): number {
    return this.rank[slot] as number;
  }

  mergedAt(slot: number): number {
    return this.merged[slot] as number;
  }

  private slot(left: number, right: number): number {
    return ((Math.imul(left, 0x9e3779b1) ^ Math.imul(right + 0x7f4a7c15, 0x85ebca6b)) >>> 0) & this.mask;
  }
}
