import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { sha256File } from "../sha256-file.js";
import {
  readSafetensorsHeader,
  readSafetensorsTensor,
  SafetensorsFormatError,
  writeSafetensorsFile,
} from "./safetensors.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "darkbloom-safetensors-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

describe("writeSafetensorsFile and readSafetensorsHeader", () => {
  it("round-trips tensors of several dtypes, streamed in pieces, with the data 8-byte aligned", async () => {
    const a = bytes(24, 1); // F32 [2, 3]
    const b = bytes(10, 2); // BF16 [5]
    const c = bytes(16, 3); // U32 [2, 2]
    const path = join(dir, "round.safetensors");
    const progress: number[] = [];
    const written = await writeSafetensorsFile(path, {
      metadata: { format: "mlx" },
      tensors: [
        {
          name: "a",
          dtype: "F32",
          shape: [2, 3],
          *chunks() {
            yield a.subarray(0, 5);
            yield a.subarray(5);
          },
        },
        {
          name: "b.weight",
          dtype: "BF16",
          shape: [5],
          *chunks() {
            yield b;
          },
        },
        { name: "empty", dtype: "U8", shape: [0, 4], *chunks() {} },
        {
          name: "c",
          dtype: "U32",
          shape: [2, 2],
          *chunks() {
            for (const x of c) yield Uint8Array.of(x);
          },
        },
      ],
      onProgress: (p) => progress.push(p.bytesWritten / p.totalBytes),
      progressIntervalBytes: 1,
    });
    expect(progress.at(-1)).toBe(1);
    expect(written.sha256).toBe(await sha256File(path));
    const header = await readSafetensorsHeader(path);
    expect(header.dataOffset % 8).toBe(0);
    expect(header.fileSize).toBe(written.sizeBytes);
    expect(header.fileSize).toBe(header.dataOffset + 24 + 10 + 16);
    expect(header.metadata).toEqual({ format: "mlx" });
    expect(header.tensors).toEqual([
      { name: "a", dtype: "F32", shape: [2, 3], begin: 0, end: 24 },
      { name: "b.weight", dtype: "BF16", shape: [5], begin: 24, end: 34 },
      { name: "empty", dtype: "U8", shape: [0, 4], begin: 34, end: 34 },
      { name: "c", dtype: "U32", shape: [2, 2], begin: 34, end: 50 },
    ]);
    expect(new Uint8Array(await readSafetensorsTensor(path, header, "a"))).toEqual(a);
    expect(new Uint8Array(await readSafetensorsTensor(path, header, "b.weight"))).toEqual(b);
    expect(new Uint8Array(await readSafetensorsTensor(path, header, "c"))).toEqual(c);
    await expect(readSafetensorsTensor(path, header, "d")).rejects.toThrow(/no tensor "d"/);
    // The JSON, then spaces up to the aligned start of the data.
    const file = await readFile(path);
    const json = file.subarray(8, header.dataOffset).toString("utf8");
    expect(json.trimEnd()).toBe(
      '{"__metadata__":{"format":"mlx"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},' +
        '"b.weight":{"dtype":"BF16","shape":[5],"data_offsets":[24,34]},' +
        '"empty":{"dtype":"U8","shape":[0,4],"data_offsets":[34,34]},' +
        '"c":{"dtype":"U32","shape":[2,2],"data_offsets":[34,50]}}',
    );
    expect(json.length - json.trimEnd().length).toBeLessThan(8);
  });

  it("refuses a tensor that produces the wrong number of bytes, and leaves no file", async () => {
    const path = join(dir, "short.safetensors");
    await expect(
      writeSafetensorsFile(path, {
        tensors: [
          {
            name: "x",
            dtype: "F16",
            shape: [4],
            *chunks() {
              yield bytes(6, 0);
            },
          },
        ],
      }),
    ).rejects.toThrow(/tensor x produced 6 bytes, expected 8/);
    await expect(
      writeSafetensorsFile(path, {
        tensors: [
          {
            name: "x",
            dtype: "F16",
            shape: [2],
            *chunks() {
              yield bytes(6, 0);
            },
          },
        ],
      }),
    ).rejects.toThrow(/too many bytes/);
    await expect(
      writeSafetensorsFile(path, {
        tensors: [
          {
            name: "x",
            dtype: "U8",
            shape: [1],
            *chunks() {
              yield bytes(1, 0);
            },
          },
          {
            name: "x",
            dtype: "U8",
            shape: [1],
            *chunks() {
              yield bytes(1, 0);
            },
          },
        ],
      }),
    ).rejects.toThrow(/repeated/);
    await expect(stat(path)).rejects.toThrow();
    await expect(stat(`${path}.partial`)).rejects.toThrow();
  });

  it("reads data laid out in another order than the header's (as mx.save_safetensors writes it)", async () => {
    const path = join(dir, "mlx-order.safetensors");
    const json = JSON.stringify({
      __metadata__: { format: "mlx" },
      a: { data_offsets: [4, 8], dtype: "U8", shape: [4] },
      b: { data_offsets: [0, 4], dtype: "U8", shape: [2, 2] },
    });
    await writeFile(
      path,
      Buffer.concat([lengthPrefix(json.length), Buffer.from(json), Buffer.from([1, 2, 3, 4, 5, 6, 7, 8])]),
    );
    const header = await readSafetensorsHeader(path);
    expect([...(await readSafetensorsTensor(path, header, "a"))]).toEqual([5, 6, 7, 8]);
    expect([...(await readSafetensorsTensor(path, header, "b"))]).toEqual([1, 2, 3, 4]);
  });
});

function lengthPrefix(n: number | bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** A file of a header (JSON text or raw bytes) and `data` bytes after it. */
async function craft(name: string, header: string | Buffer, data = 0, length?: bigint): Promise<string> {
  const raw = typeof header === "string" ? Buffer.from(header, "utf8") : header;
  const path = join(dir, `${name}.safetensors`);
  await writeFile(path, Buffer.concat([lengthPrefix(length ?? BigInt(raw.length)), raw, Buffer.alloc(data)]));
  return path;
}

const one = (entry: unknown) => JSON.stringify({ t: entry });

describe("readSafetensorsHeader refuses malformed files, saying what is wrong", () => {
  const cases: [string, () => Promise<string>, RegExp][] = [
    [
      "a file shorter than the length prefix",
      async () => {
        const path = join(dir, "tiny.safetensors");
        await writeFile(path, Buffer.from([1, 2, 3]));
        return path;
      },
      /the file is 3 bytes, too short for a header/,
    ],
    ["a zero header length", () => craft("zero", "", 0, 0n), /the header length is 0/],
    [
      "a header length over the limit",
      () => craft("huge", "{}", 0, 2n ** 40n),
      /header length 1099511627776 is over the 100000000-byte limit/,
    ],
    [
      "a header running past the end",
      () => craft("past", "{}", 0, 50n),
      /the header is 50 bytes but the file is 10: truncated/,
    ],
    ["a header that is not UTF-8", () => craft("latin1", Buffer.from([0x7b, 0xff, 0xfe, 0x7d])), /not UTF-8/],
    ["a header that is not an object", () => craft("array", "[1, 2]"), /does not start with '\{'/],
    ["a header that is not JSON", () => craft("bad-json", '{"t": '), /the header is not JSON/],
    [
      "metadata that is not an object",
      () => craft("meta-list", '{"__metadata__": [1]}'),
      /__metadata__ is not an object/,
    ],
    [
      "metadata values that are not strings",
      () => craft("meta-num", '{"__metadata__": {"format": 1}}'),
      /__metadata__\.format is not a string/,
    ],
    [
      "an empty tensor name",
      () => craft("empty-name", JSON.stringify({ "": { dtype: "U8", shape: [1], data_offsets: [0, 1] } }), 1),
      /empty name/,
    ],
    ["a tensor entry that is not an object", () => craft("entry", one("x")), /tensor "t" is not an object/],
    [
      "an unknown field",
      () => craft("field", one({ dtype: "U8", shape: [1], data_offsets: [0, 1], extra: 1 }), 1),
      /tensor "t" has an unknown field "extra"/,
    ],
    [
      "an unknown dtype",
      () => craft("dtype", one({ dtype: "F128", shape: [1], data_offsets: [0, 16] }), 16),
      /tensor "t" has an unknown dtype "F128"/,
    ],
    [
      "a shape with a negative or fractional size",
      () => craft("shape", one({ dtype: "U8", shape: [2, -1], data_offsets: [0, 2] }), 2),
      /shape that is not a list of whole numbers/,
    ],
    [
      "data_offsets of the wrong length",
      () => craft("offsets", one({ dtype: "U8", shape: [1], data_offsets: [0] }), 1),
      /data_offsets that are not two whole numbers/,
    ],
    [
      "an end before the beginning",
      () => craft("backwards", one({ dtype: "U8", shape: [0], data_offsets: [4, 2] }), 4),
      /ends \(2\) before it begins \(4\)/,
    ],
    [
      "a span that is not dtype × shape",
      () => craft("span", one({ dtype: "F32", shape: [2], data_offsets: [0, 4] }), 4),
      /F32 \[2\] is 8 bytes but its data_offsets span 4/,
    ],
    [
      "an implausible shape",
      () =>
        craft("overflow", one({ dtype: "F32", shape: [2 ** 30, 2 ** 30, 2 ** 30], data_offsets: [0, 0] })),
      /implausible shape/,
    ],
    [
      "a gap between tensors",
      () =>
        craft(
          "gap",
          JSON.stringify({
            a: { dtype: "U8", shape: [4], data_offsets: [0, 4] },
            b: { dtype: "U8", shape: [4], data_offsets: [8, 12] },
          }),
          12,
        ),
      /tensor "b" starts at 8, expected 4/,
    ],
    [
      "overlapping tensors",
      () =>
        craft(
          "overlap",
          JSON.stringify({
            a: { dtype: "U8", shape: [4], data_offsets: [0, 4] },
            b: { dtype: "U8", shape: [4], data_offsets: [2, 6] },
          }),
          6,
        ),
      /tensor "b" starts at 2, expected 4/,
    ],
    [
      "data that does not start at 0",
      () => craft("late", one({ dtype: "U8", shape: [2], data_offsets: [2, 4] }), 4),
      /starts at 2, expected 0/,
    ],
    [
      "tensors past the end of the file",
      () => craft("cut", one({ dtype: "U8", shape: [16], data_offsets: [0, 16] }), 10),
      /the tensors need 16 bytes of data but the file has 10: truncated/,
    ],
    [
      "bytes after the last tensor",
      () => craft("trailing", one({ dtype: "U8", shape: [4], data_offsets: [0, 4] }), 9),
      /the file has 5 bytes after the last tensor/,
    ],
  ];
  it.each(cases)("%s", async (_what, make, message) => {
    const path = await make();
    const err = await readSafetensorsHeader(path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SafetensorsFormatError);
    expect((err as Error).message).toMatch(message);
    expect((err as Error).message.startsWith(`${path}: `)).toBe(true);
  });
});
