// safetensors reading and writing (https://github.com/huggingface/safetensors format):
// u64 little-endian header length, a JSON header {name: {dtype, shape, data_offsets}, ...,
// "__metadata__": {str: str}}, then the raw little-endian tensor bytes. The reader checks
// every header field against the file before touching data, as strictly as the format's own
// Rust library (tensors tile the data section exactly: no gaps, overlaps or trailing bytes),
// and refuses duplicate keys and names that would reach an object's prototype, so a
// malformed or hostile file is an error naming the problem, never an out-of-bounds read.
import { closeSync, fstatSync, readSync } from 'node:fs';
import { describeNonFinite, NonFiniteError } from '../core/finite.js';
import type { Tensor } from '../core/tensor.js';
import { numel } from '../core/tensor.js';
import { duplicateKey, nullRecord, touchesPrototype } from '../core/untrusted.js';
import { writeFileDurably } from './atomic.js';
import { openRegular, readRegular } from './regular-file.js';

export const DTYPE_BYTES = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
} as const;
export type Dtype = keyof typeof DTYPE_BYTES;

/** Headers above this are refused (the reference implementation's limit is 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorEntry {
  dtype: Dtype;
  shape: number[];
  /** Byte range inside the data section. */
  begin: number;
  end: number;
}

export interface SafetensorsFile {
  path: string;
  metadata: Record<string, string>;
  entries: Map<string, TensorEntry>;
  /** The data section (a view into the file's bytes). */
  data: Uint8Array;
}

export class SafetensorsError extends Error {
  constructor(path: string, problem: string) {
    super(`${path}: not a valid safetensors file: ${problem}`);
    this.name = 'SafetensorsError';
  }
}

/** Checks a header against the size of the data section that follows it. */
export function parseHeader(
  headerBytes: Uint8Array,
  dataLength: number,
  path: string,
): { metadata: Record<string, string>; entries: Map<string, TensorEntry> } {
  const fail = (problem: string): never => {
    throw new SafetensorsError(path, problem);
  };
  let header: unknown;
  let text = '';
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
    header = JSON.parse(text);
  } catch (e) {
    fail(`header is not valid UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) fail('header is not a JSON object');
  const repeated = duplicateKey(text);
  if (repeated !== undefined) fail(`the header names '${repeated}' twice`);
  let metadata = nullRecord<string>();
  const entries = new Map<string, TensorEntry>();
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (touchesPrototype(name)) fail(`tensor name '${name}' is not allowed (it names an object prototype)`);
    if (name === '__metadata__') metadata = readMetadata(raw, fail);
    else entries.set(name, tensorEntry(name, raw, dataLength, fail));
  }
  checkTiling(entries, dataLength, fail);
  return { metadata, entries };
}

/** The header's __metadata__: string values only, no prototype keys. */
function readMetadata(raw: unknown, fail: (problem: string) => never): Record<string, string> {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail('__metadata__ is not an object');
  const metadata = nullRecord<string>();
  for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
    if (touchesPrototype(k)) fail(`__metadata__ key '${k}' is not allowed (it names an object prototype)`);
    if (typeof v !== 'string') fail(`__metadata__.${k} is not a string`);
    metadata[k] = v;
  }
  return metadata;
}

/** One tensor's header entry, checked on its own: dtype, shape, and offsets inside the data
 * section spanning exactly the bytes the shape needs. */
function tensorEntry(name: string, raw: unknown, dataLength: number, fail: (problem: string) => never): TensorEntry {
  const e = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
  if (typeof e !== 'object' || e === null) fail(`tensor '${name}' has no {dtype, shape, data_offsets} entry`);
  if (typeof e.dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, e.dtype))
    fail(
      `tensor '${name}' has unknown dtype ${JSON.stringify(e.dtype)} (known: ${Object.keys(DTYPE_BYTES).join(', ')})`,
    );
  if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
    fail(`tensor '${name}' has an invalid shape ${JSON.stringify(e.shape)}`);
  const offsets = e.data_offsets;
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0))
    fail(`tensor '${name}' has invalid data_offsets ${JSON.stringify(offsets)}`);
  const [begin, end] = offsets as [number, number];
  const dtype = e.dtype as Dtype;
  const shape = e.shape as number[];
  if (end < begin) fail(`tensor '${name}' has data_offsets [${begin}, ${end}] ending before they begin`);
  if (end > dataLength)
    fail(
      `tensor '${name}' has data_offsets [${begin}, ${end}] outside the ${dataLength}-byte data section (truncated?)`,
    );
  const expected = numel(shape) * DTYPE_BYTES[dtype];
  if (end - begin !== expected)
    fail(`tensor '${name}' has ${end - begin} bytes but ${dtype} [${shape.join(', ')}] needs ${expected}`);
  return { dtype, shape, begin, end };
}

/** The tensors must cover the data section exactly, in offset order: each begins where the
 * previous one ends, the first at 0, the last at the section's end. */
function checkTiling(entries: Map<string, TensorEntry>, dataLength: number, fail: (problem: string) => never): void {
  const sorted = [...entries.entries()].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let end = 0;
  let last = '';
  for (const [name, e] of sorted) {
    if (e.begin < end)
      fail(`tensors '${last}' and '${name}' overlap (bytes [${e.begin}, ${Math.min(end, e.end)}) of the data section)`);
    if (e.begin > end)
      fail(
        `${e.begin - end} bytes before tensor '${name}' belong to no tensor (${last ? `after '${last}'` : 'at the start'})`,
      );
    end = e.end;
    last = name;
  }
  if (end !== dataLength)
    fail(`${dataLength - end} bytes after the last tensor${last ? ` '${last}'` : ''} belong to no tensor`);
}

/** Reads the 8-byte length prefix and checks it against the file size; returns the header length. */
function headerLength(prefix: Uint8Array, fileSize: number, path: string): number {
  const fail = (problem: string): never => {
    throw new SafetensorsError(path, problem);
  };
  if (fileSize < 8) fail(`file is ${fileSize} bytes, shorter than the 8-byte header length`);
  const headerLen = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES))
    fail(`header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  const n = Number(headerLen);
  if (8 + n > fileSize) fail(`header length ${n} runs past the end of the ${fileSize}-byte file (truncated?)`);
  return n;
}

/** Parses and checks a whole safetensors file held in memory. */
export function parseSafetensors(bytes: Uint8Array, path = '<buffer>'): SafetensorsFile {
  const n = headerLength(bytes, bytes.length, path);
  const data = bytes.subarray(8 + n);
  const { metadata, entries } = parseHeader(bytes.subarray(8, 8 + n), data.length, path);
  return { path, metadata, entries, data };
}

/** A safetensors file on disk: the header is read and checked up front, each tensor is read
 * on demand with positioned reads, so a multi-gigabyte checkpoint is never held whole. */
export class SafetensorsReader {
  readonly metadata: Record<string, string>;
  readonly entries: Map<string, TensorEntry>;
  private readonly dataStart: number;
  private fd: number | undefined;

  constructor(readonly path: string) {
    this.fd = openRegular(path);
    try {
      const size = fstatSync(this.fd).size;
      const prefix = new Uint8Array(8);
      readSync(this.fd, prefix, 0, Math.min(8, size), 0);
      const n = headerLength(prefix, size, path);
      const header = new Uint8Array(n);
      readSync(this.fd, header, 0, n, 8);
      this.dataStart = 8 + n;
      ({ metadata: this.metadata, entries: this.entries } = parseHeader(header, size - this.dataStart, path));
    } catch (e) {
      this.close();
      throw e;
    }
  }

  /** Where tensor `name`'s bytes start in the file. */
  fileOffset(name: string): number {
    const e = this.entries.get(name);
    if (!e) throw new Error(`${this.path}: no tensor named '${name}'`);
    return this.dataStart + e.begin;
  }

  /** A floating-point tensor converted to fp32. */
  read(name: string): Tensor {
    const e = this.entries.get(name);
    if (!e) throw new Error(`${this.path}: no tensor named '${name}'`);
    if (this.fd === undefined) throw new Error(`${this.path}: reader is closed`);
    const bytes = new Uint8Array(e.end - e.begin);
    let done = 0;
    while (done < bytes.length) {
      const got = readSync(this.fd, bytes, done, bytes.length - done, this.dataStart + e.begin + done);
      if (got === 0) throw new SafetensorsError(this.path, `file ended while reading tensor '${name}'`);
      done += got;
    }
    return decodeTensor(bytes, e, `${this.path}: tensor '${name}'`);
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

export function readSafetensors(path: string): SafetensorsFile {
  return parseSafetensors(readRegular(path), path);
}

const littleEndianHost = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

let f16Values: Float32Array | undefined;
function f16Table(): Float32Array {
  f16Values ??= Float32Array.from({ length: 65536 }, (_, h) => f16ToF32(h));
  return f16Values;
}

export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** A floating-point tensor converted to fp32. */
export function getTensor(file: SafetensorsFile, name: string): Tensor {
  const e = file.entries.get(name);
  if (!e) throw new Error(`${file.path}: no tensor named '${name}'`);
  return decodeTensor(file.data.subarray(e.begin, e.end), e, `${file.path}: tensor '${name}'`);
}

function decodeTensor(bytes: Uint8Array, e: TensorEntry, what: string): Tensor {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = numel(e.shape);
  const out = new Float32Array(count);
  switch (e.dtype) {
    case 'F32':
      if (littleEndianHost) new Uint8Array(out.buffer).set(bytes);
      else for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
      break;
    case 'F64':
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(i * 8, true);
      break;
    case 'F16': {
      const table = f16Table();
      for (let i = 0; i < count; i++) out[i] = table[view.getUint16(i * 2, true)]!;
      break;
    }
    case 'BF16': {
      const bits = new Uint32Array(out.buffer); // bf16 is the top half of an fp32
      for (let i = 0; i < count; i++) bits[i] = view.getUint16(i * 2, true) << 16;
      break;
    }
    default:
      throw new Error(`${what} is ${e.dtype}, not a floating-point dtype`);
  }
  return { data: out, shape: [...e.shape] };
}

/** A tensor to write: fp32, or integers stored as I64 (e.g. batch norms' num_batches_tracked),
 * or elements already encoded. */
export type WritableTensor = (Tensor & { dtype?: 'F32' | 'I64' }) | EncodedTensor;

/** Elements already in `dtype`'s little-endian layout, written byte for byte: how a converted
 * checkpoint keeps integers past 2^24 and float64 exact, which an fp32 `data` cannot hold. */
export interface EncodedTensor {
  bytes: Uint8Array;
  shape: number[];
  dtype: 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';
}

function tensorBytes(name: string, t: WritableTensor): Uint8Array {
  if ('bytes' in t) return encodedBytes(name, t);
  if (t.data.length !== numel(t.shape))
    throw new RangeError(`tensor '${name}': ${t.data.length} values for shape [${t.shape.join(', ')}]`);
  const problem = describeNonFinite(name, t.data);
  if (problem) throw new NonFiniteError(`not written: ${problem}, and lora-train never writes NaN or Inf`, name);
  if (t.dtype === 'I64') return new Uint8Array(BigInt64Array.from(t.data, (v) => BigInt(Math.round(v))).buffer);
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

function encodedBytes(name: string, t: EncodedTensor): Uint8Array {
  const expected = numel(t.shape) * DTYPE_BYTES[t.dtype];
  if (t.bytes.byteLength !== expected)
    throw new RangeError(`tensor '${name}': ${t.bytes.byteLength} bytes for ${t.dtype} [${t.shape.join(', ')}]`);
  if (t.dtype === 'F64') {
    // NaN and ±Inf kept, finite values as 0: a finite double past fp32's range is no Inf.
    const view = new DataView(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
    const marks = Float32Array.from({ length: expected / 8 }, (_, i) => {
      const v = view.getFloat64(i * 8, true);
      return Number.isFinite(v) ? 0 : v;
    });
    const problem = describeNonFinite(name, marks);
    if (problem) throw new NonFiniteError(`not written: ${problem}, and lora-train never writes NaN or Inf`, name);
  }
  return t.bytes;
}

/** Serialises tensors (F32 unless marked otherwise); keys are written sorted, header padded to
 * 8 bytes. A tensor holding NaN or Inf is refused with a NonFiniteError. */
export function serializeSafetensors(
  tensors: Record<string, WritableTensor>,
  metadata?: Record<string, string>,
): Uint8Array {
  const names = Object.keys(tensors).sort();
  const header = nullRecord<unknown>();
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  const blobs = names.map((name) => {
    const t = tensors[name]!;
    const bytes = tensorBytes(name, t);
    header[name] = { dtype: t.dtype ?? 'F32', shape: t.shape, data_offsets: [offset, offset + bytes.byteLength] };
    offset += bytes.byteLength;
    return bytes;
  });
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const bytes of blobs) {
    out.set(bytes, at);
    at += bytes.byteLength;
  }
  return out;
}

/** Writes atomically: a temporary file in the same folder, fsynced, then renamed over path
 * (and the folder fsynced, so the rename survives a power cut). Nothing is left behind when
 * the write fails, and a file that was there stays. */
export function writeSafetensors(
  path: string,
  tensors: Record<string, WritableTensor>,
  metadata?: Record<string, string>,
): void {
  let bytes: Uint8Array;
  try {
    bytes = serializeSafetensors(tensors, metadata);
  } catch (e) {
    if (e instanceof NonFiniteError) throw new NonFiniteError(`${path}: ${e.message}`, e.tensor);
    throw e;
  }
  writeFileDurably(path, bytes);
}
