// safetensors: round trip, dtype decoding against known bit patterns, and a clear error for
// every kind of malformed file.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  SafetensorsError,
  SafetensorsReader,
  getTensor,
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  writeSafetensors,
} from '../src/io/safetensors.js';

function fileWith(header: unknown, dataBytes: number, headerLen?: bigint): Uint8Array {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, headerLen ?? BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

const entry = (dtype: string, shape: number[], begin: number, end: number) => ({
  dtype,
  shape,
  data_offsets: [begin, end],
});

describe('safetensors', () => {
  it('round-trips tensors and metadata through an atomic write', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lora-train-st-'));
    const path = join(dir, 'a.safetensors');
    const a = { data: new Float32Array([1, -2.5, 3e-8, 4e7, 5, 6]), shape: [2, 3] };
    const b = { data: new Float32Array([7]), shape: [1] };
    writeSafetensors(path, { 'z.weight': a, 'a.bias': b }, { format: 'pt' });
    const file = readSafetensors(path);
    expect(file.metadata).toEqual({ format: 'pt' });
    expect([...file.entries.keys()]).toEqual(['a.bias', 'z.weight']);
    expect(getTensor(file, 'z.weight')).toEqual(a);
    expect(getTensor(file, 'a.bias')).toEqual(b);
    const raw = readFileSync(path);
    expect(Number(raw.readBigUInt64LE(0)) % 8).toBe(0); // header padded to 8 bytes like the Rust writer
  });

  it('decodes F16, BF16 and F64 from their bit patterns', () => {
    const header = { h: entry('F16', [4], 0, 8), b: entry('BF16', [3], 8, 14), d: entry('F64', [1], 14, 22) };
    const bytes = fileWith(header, 22);
    const body = new DataView(bytes.buffer, bytes.length - 22);
    [0x3c00, 0xc100, 0x0001, 0x7c00].forEach((v, i) => body.setUint16(i * 2, v, true)); // 1, -2.5, 2^-24, inf
    [0x3f80, 0xc020, 0x0000].forEach((v, i) => body.setUint16(8 + i * 2, v, true)); // 1, -2.5, 0
    body.setFloat64(14, 0.1, true);
    const file = parseSafetensors(bytes);
    expect([...getTensor(file, 'h').data]).toEqual([1, -2.5, 2 ** -24, Infinity]);
    expect([...getTensor(file, 'b').data]).toEqual([1, -2.5, 0]);
    expect(getTensor(file, 'd').data[0]).toBeCloseTo(0.1, 7);
  });

  const malformed: [string, Uint8Array, RegExp][] = [
    ['a file shorter than the length prefix', new Uint8Array(5), /shorter than the 8-byte header length/],
    [
      'a header length past the end (truncated)',
      fileWith({}, 0, 1000n),
      /header length 1000 runs past the end of the 10-byte file/,
    ],
    ['an oversized header length', fileWith({}, 0, 1n << 40n), /exceeds the 100000000-byte limit/],
    ['a header that is not JSON', fileWith('{"a": ', 0), /header is not valid UTF-8 JSON/],
    ['a header that is not an object', fileWith('[1,2]', 0), /header is not a JSON object/],
    ['an unknown dtype', fileWith({ w: entry('F8_E4M3X', [2], 0, 2) }, 2), /tensor 'w' has unknown dtype "F8_E4M3X"/],
    ['a negative dimension', fileWith({ w: entry('F32', [-1], 0, 4) }, 4), /tensor 'w' has an invalid shape \[-1\]/],
    [
      'offsets outside the data',
      fileWith({ w: entry('F32', [4], 0, 16) }, 8),
      /data_offsets \[0, 16\] outside the 8-byte data section/,
    ],
    ['offsets that end before they begin', fileWith({ w: entry('F32', [0], 8, 4) }, 8), /ending before they begin/],
    [
      'a size that does not match the shape',
      fileWith({ w: entry('F32', [3], 0, 8) }, 8),
      /has 8 bytes but F32 \[3\] needs 12/,
    ],
    [
      'overlapping tensors',
      fileWith({ a: entry('F32', [2], 0, 8), b: entry('F32', [2], 4, 12) }, 12),
      /tensors 'a' and 'b' overlap/,
    ],
    ['non-string metadata', fileWith({ __metadata__: { format: 1 } }, 0), /__metadata__.format is not a string/],
    // As strict as the format's Rust library: the tensors tile the data section exactly.
    [
      'a gap between tensors',
      fileWith({ a: entry('F32', [1], 0, 4), b: entry('F32', [1], 8, 12) }, 12),
      /4 bytes before tensor 'b' belong to no tensor \(after 'a'\)/,
    ],
    [
      'a gap before the first tensor',
      fileWith({ a: entry('F32', [1], 4, 8) }, 8),
      /4 bytes before tensor 'a' belong to no tensor \(at the start\)/,
    ],
    [
      'bytes after the last tensor',
      fileWith({ a: entry('F32', [1], 0, 4) }, 12),
      /8 bytes after the last tensor 'a' belong to no tensor/,
    ],
    [
      'a key twice',
      fileWith(
        '{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
        4,
      ),
      /the header names 'w' twice/,
    ],
    [
      'a __proto__ tensor name',
      fileWith('{"__proto__": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', 4),
      /tensor name '__proto__' is not allowed/,
    ],
    [
      'a prototype key inside a name',
      fileWith({ 'prior.__proto__.lora_A.weight': entry('F32', [1], 0, 4) }, 4),
      /tensor name 'prior.__proto__.lora_A.weight' is not allowed/,
    ],
    [
      'a constructor metadata key',
      fileWith({ __metadata__: { constructor: 'x' } }, 0),
      /__metadata__ key 'constructor' is not allowed/,
    ],
  ];
  it.each(malformed)('refuses %s, in memory and on disk', (_, bytes, message) => {
    expect(() => parseSafetensors(bytes, 'bad.safetensors')).toThrow(SafetensorsError);
    expect(() => parseSafetensors(bytes, 'bad.safetensors')).toThrow(message);
    const file = join(mkdtempSync(join(tmpdir(), 'lora-train-bad-st-')), 'bad.safetensors');
    writeFileSync(file, bytes);
    expect(() => new SafetensorsReader(file)).toThrow(SafetensorsError);
    expect(() => new SafetensorsReader(file)).toThrow(message);
  });

  it('reads tensors from disk on demand, each checked', () => {
    const file = join(mkdtempSync(join(tmpdir(), 'lora-train-st-')), 'a.safetensors');
    writeSafetensors(file, { w: { data: new Float32Array([1, 2, 3]), shape: [3] } });
    const reader = new SafetensorsReader(file);
    expect(reader.read('w')).toEqual({ data: new Float32Array([1, 2, 3]), shape: [3] });
    expect(() => reader.read('v')).toThrow(`${file}: no tensor named 'v'`);
    reader.close();
    expect(() => reader.read('w')).toThrow('reader is closed');
  });

  it('names a missing tensor and refuses integer tensors as floats', () => {
    const file = parseSafetensors(fileWith({ i: entry('I64', [1], 0, 8) }, 8), 'x.safetensors');
    expect(() => getTensor(file, 'nope')).toThrow("x.safetensors: no tensor named 'nope'");
    expect(() => getTensor(file, 'i')).toThrow("tensor 'i' is I64, not a floating-point dtype");
  });

  it('refuses to serialise a tensor whose data does not fit its shape', () => {
    expect(() => serializeSafetensors({ w: { data: new Float32Array(3), shape: [2, 2] } })).toThrow(
      "tensor 'w': 3 values for shape [2, 2]",
    );
  });
});
