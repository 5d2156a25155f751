// Reads PyTorch checkpoints (torch.save's zip format) without executing anything: a zip reader
// for the archive, and the pickle machine of pickle.ts for data.pkl, which knows only the
// opcodes and globals torch.save writes for tensors and containers and calls nothing. Every
// error names the file; the work done is bounded by the file's size.
import { closeSync, fstatSync, readSync } from 'node:fs';
import { f16ToF32 } from './safetensors.js';
import { openRegular } from './regular-file.js';
import type { Tensor } from '../core/tensor.js';
import { MAX_VALUES_PER_BYTE, PickleError, show, type StorageRef, TensorRef, toPlain, unpickle } from './pickle.js';

export { TensorRef };

export class CheckpointError extends Error {
  constructor(path: string, problem: string) {
    super(`${path}: ${problem}`);
    this.name = 'CheckpointError';
  }
}

// ---- zip (stored entries, zip64) -------------------------------------------------------------

interface ZipEntry {
  name: string;
  method: number;
  size: number;
  localHeader: number;
}

/** An open archive being read: every offset and size it claims is checked against `size`
 * before it is used, so a hostile one fails with `fail`, never with Node's range errors. */
interface Zip {
  fd: number;
  size: number;
  fail: (problem: string) => never;
}

function readAt(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return buf.subarray(0, done);
}

/** A zip64 offset or size, which must lie within the file, as a number (exact there). */
function within(zip: Zip, value: bigint, what: string): number {
  if (value > BigInt(zip.size)) zip.fail(`${what} ${value} is past the end of the ${zip.size}-byte file`);
  return Number(value);
}

function readZipDirectory(fd: number, path: string): Map<string, ZipEntry> {
  const zip: Zip = {
    fd,
    size: fstatSync(fd).size,
    fail: (problem) => {
      throw new CheckpointError(path, `not a PyTorch zip checkpoint: ${problem}`);
    },
  };
  const { entries, cdOffset, cdSize } = centralDirectory(zip);
  const cd = readAt(fd, cdOffset, cdSize);
  const out = new Map<string, ZipEntry>();
  let at = 0;
  for (let e = 0; e < entries; e++) {
    const { entry, next } = directoryEntry(zip, cd, at, e);
    if (entry.localHeader + 30 + entry.size > zip.size)
      zip.fail(
        `${entry.name} (${entry.size} bytes at offset ${entry.localHeader}) runs past the end of the ${zip.size}-byte file`,
      );
    out.set(entry.name, entry);
    at = next;
  }
  return out;
}

/** Where the central directory is and how many entries it has, from the end record (or the
 * zip64 end record, when a field of the end record is saturated). */
function centralDirectory(zip: Zip): { entries: number; cdOffset: number; cdSize: number } {
  const tail = readAt(zip.fd, Math.max(0, zip.size - 65557), Math.min(zip.size, 65557));
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--)
    if (tail.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd < 0) zip.fail('no end-of-central-directory record (a legacy pre-1.6 torch.save file, or not a zip)');
  let entries = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (cdOffset === 0xffffffff || entries === 0xffff || cdSize === 0xffffffff) {
    const locator = eocd - 20;
    if (locator < 0 || tail.readUInt32LE(locator) !== 0x07064b50) zip.fail('zip64 locator missing');
    const zip64At = tail.readBigUInt64LE(locator + 8);
    if (zip64At + 56n > BigInt(zip.size)) zip.fail(`the zip64 end record is outside the file (at ${zip64At})`);
    const z = readAt(zip.fd, Number(zip64At), 56);
    if (z.length < 56 || z.readUInt32LE(0) !== 0x06064b50) zip.fail('zip64 end record missing');
    entries = Number(z.readBigUInt64LE(32)); // the loop over them stops at the first one missing
    cdSize = within(zip, z.readBigUInt64LE(40), 'the central directory size');
    cdOffset = within(zip, z.readBigUInt64LE(48), 'the central directory offset');
  }
  if (cdOffset + cdSize > zip.size) zip.fail('central directory outside the file (truncated?)');
  return { entries, cdOffset, cdSize };
}

/** Central directory entry `index`, at byte `at` of `cd`, with its zip64 sizes applied;
 * `next` is where the following entry begins. */
function directoryEntry(zip: Zip, cd: Buffer, at: number, index: number): { entry: ZipEntry; next: number } {
  const damaged = () => zip.fail(`central directory entry ${index} is damaged`);
  if (at + 46 > cd.length || cd.readUInt32LE(at) !== 0x02014b50) damaged();
  const extraAt = at + 46 + cd.readUInt16LE(at + 28);
  const extraEnd = extraAt + cd.readUInt16LE(at + 30);
  const next = extraEnd + cd.readUInt16LE(at + 32);
  if (next > cd.length) damaged();
  const entry: ZipEntry = {
    name: cd.toString('utf8', at + 46, extraAt),
    method: cd.readUInt16LE(at + 10),
    size: cd.readUInt32LE(at + 24),
    localHeader: cd.readUInt32LE(at + 42),
  };
  for (let x = extraAt; x + 4 <= extraEnd;) {
    const end = Math.min(extraEnd, x + 4 + cd.readUInt16LE(x + 2));
    if (cd.readUInt16LE(x) === 0x0001) applyZip64(zip, entry, cd.subarray(at, at + 46), cd.subarray(x + 4, end));
    x = end;
  }
  return { entry, next };
}

/** The zip64 extra field holds, in order, the 64-bit values of the saturated 32-bit fields:
 * uncompressed size, compressed size, local header offset. */
function applyZip64(zip: Zip, entry: ZipEntry, header: Buffer, field: Buffer): void {
  let p = 0;
  const next = (what: string): number => {
    if (p + 8 > field.length) zip.fail(`${entry.name}: its zip64 extra field is too short`);
    p += 8;
    return within(zip, field.readBigUInt64LE(p - 8), `${entry.name}: ${what}`);
  };
  if (header.readUInt32LE(24) === 0xffffffff) entry.size = next('size');
  if (header.readUInt32LE(20) === 0xffffffff) next('compressed size');
  if (header.readUInt32LE(42) === 0xffffffff) entry.localHeader = next('local header offset');
}

export class TorchCheckpoint {
  /** The unpickled object: objects, arrays, numbers, strings, booleans, null, TensorRef leaves. */
  readonly root: unknown;
  private readonly entries: Map<string, ZipEntry>;
  private readonly prefix: string;
  private fd: number | undefined;

  constructor(readonly path: string) {
    this.fd = openRegular(path);
    try {
      this.entries = readZipDirectory(this.fd, path);
      const pkl = [...this.entries.keys()].find((n) => n.endsWith('/data.pkl') || n === 'data.pkl');
      if (!pkl) throw new CheckpointError(path, 'no data.pkl in the archive');
      this.prefix = pkl.slice(0, -'data.pkl'.length);
      const pickle = this.readEntry(pkl);
      this.root = toPlain(unpickle(pickle), MAX_VALUES_PER_BYTE * pickle.length + 1024);
    } catch (e) {
      this.close();
      throw this.named(e);
    }
  }

  /** Any error as a CheckpointError naming the file. */
  private named(e: unknown): CheckpointError {
    if (e instanceof CheckpointError) return e;
    if (e instanceof PickleError) return new CheckpointError(this.path, e.message);
    return new CheckpointError(this.path, `cannot be read (${(e as Error).message})`);
  }

  private readEntry(name: string, offset = 0, length?: number): Buffer {
    const e = this.entries.get(name);
    if (!e) throw new CheckpointError(this.path, `the archive has no ${name}`);
    if (e.method !== 0)
      throw new CheckpointError(
        this.path,
        `${name} is compressed (method ${e.method}); torch.save writes stored entries`,
      );
    if (this.fd === undefined) throw new CheckpointError(this.path, 'checkpoint is closed');
    const local = readAt(this.fd, e.localHeader, 30);
    if (local.length < 30 || local.readUInt32LE(0) !== 0x04034b50)
      throw new CheckpointError(this.path, `damaged local header for ${name}`);
    const start = e.localHeader + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
    const n = length ?? e.size - offset;
    if (offset + n > e.size) throw new CheckpointError(this.path, `${name} is shorter than a tensor needs`);
    const buf = readAt(this.fd, start + offset, n);
    if (buf.length !== n) throw new CheckpointError(this.path, `${name} ends early (truncated file?)`);
    return buf;
  }

  /** The elements of a tensor as fp32 (floating point) or as numbers (integers), strides
   * applied: what the model loaders compute with. Integers past 2^24 are rounded here;
   * rawTensor has them exactly. */
  tensor(ref: TensorRef): Tensor {
    try {
      const raw = this.gather(ref);
      return { data: decode(raw.bytes, ref.storage), shape: raw.shape };
    } catch (e) {
      throw this.named(e);
    }
  }

  /** The elements of a tensor exactly as the file stores them, strides applied: for writing
   * them out unchanged, in their own dtype (`lora-train convert`). */
  rawTensor(ref: TensorRef): RawTensor {
    try {
      return this.gather(ref);
    } catch (e) {
      throw this.named(e);
    }
  }

  private gather(ref: TensorRef): RawTensor {
    const { storage, offset, shape, stride } = ref;
    const numel = shape.reduce((a, b) => a * b, 1);
    let last = offset;
    for (let i = 0; i < shape.length; i++) last += (shape[i]! - 1) * stride[i]!;
    if (numel > 0 && last >= storage.numel)
      throw new CheckpointError(this.path, `a tensor reaches past its storage ${storage.key}`);
    const width = storage.bytesPerElement;
    const entry = `${this.prefix}data/${storage.key}`;
    const span = numel > 0 ? last - offset + 1 : 0;
    const bytes = this.readEntry(entry, offset * width, span * width);
    // Strides of 0 repeat elements; never more of them than the file could hold.
    if (numel > Math.max(this.entries.get(entry)!.size / width, 2 ** 24))
      throw new CheckpointError(this.path, `a tensor of shape [${shape.join(', ')}] is larger than the file holds`);
    const rowMajor = isRowMajor(shape, stride);
    return {
      bytes: rowMajor ? bytes : gatherStrided(bytes, shape, stride, width, numel),
      shape: [...shape],
      dtype: storage.dtype,
    };
  }

  /** The TensorRef leaves under `key` (a dotted path into the root, e.g. effnet_state_dict). */
  stateDict(key?: string): Map<string, TensorRef> {
    let node: unknown = this.root;
    for (const part of key ? key.split('.') : []) {
      if (!node || typeof node !== 'object' || !Object.hasOwn(node, part)) {
        const keys = node && typeof node === 'object' ? Object.keys(node).join(', ') : '';
        throw new CheckpointError(this.path, `has no key '${key}' (top-level keys: ${keys})`);
      }
      node = (node as Record<string, unknown>)[part];
    }
    // toPlain made every dict with string keys a plain object; anything else holds no names.
    if (!Array.isArray(node) && (typeof node !== 'object' || Object.getPrototypeOf(node) !== Object.prototype))
      throw new CheckpointError(
        this.path,
        `${key ? `'${key}'` : 'the top level'} is ${kindOf(node)}, not a dict of tensors`,
      );
    const out = new Map<string, TensorRef>();
    for (const [k, v] of Object.entries(node as object)) if (v instanceof TensorRef) out.set(k, v);
    return out;
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/** A tensor's elements as stored: little-endian, `dtype`'s own width, row-major. */
export interface RawTensor {
  bytes: Buffer;
  shape: number[];
  /** The torch dtype: float32, bfloat16, int64, bool, ... */
  dtype: string;
}

/** What an unpickled value is, for a message. */
function kindOf(value: unknown): string {
  if (value === null || value === undefined) return 'None';
  if (value instanceof TensorRef) return 'a tensor';
  if (value instanceof Map) return 'a dict whose keys are not all strings';
  if (typeof value === 'object') return show(value);
  return `a ${typeof value === 'bigint' ? 'number' : typeof value}`;
}

/** Whether the strides walk the elements in order, so the bytes read are the tensor's. */
function isRowMajor(shape: number[], stride: number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d] !== 1 && stride[d] !== expected) return false;
    expected *= shape[d]!;
  }
  return true;
}

/** The elements of a strided view of `bytes`, `width` bytes each, copied into row-major order. */
function gatherStrided(bytes: Buffer, shape: number[], stride: number[], width: number, numel: number): Buffer {
  const out = Buffer.alloc(numel * width);
  const index = new Array<number>(shape.length).fill(0);
  for (let i = 0; i < numel; i++) {
    let e = 0;
    for (let d = 0; d < shape.length; d++) e += index[d]! * stride[d]!;
    for (let b = 0; b < width; b++) out[i * width + b] = bytes[e * width + b]!;
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++index[d]! < shape[d]!) break;
      index[d] = 0;
    }
  }
  return out;
}

/** Row-major elements of a storage's dtype as fp32. */
function decode(bytes: Buffer, storage: StorageRef): Float32Array {
  const get = elementReader(bytes, storage.dtype);
  const out = new Float32Array(bytes.length / storage.bytesPerElement);
  for (let i = 0; i < out.length; i++) out[i] = get(i);
  return out;
}

function elementReader(bytes: Buffer, dtype: string): (i: number) => number {
  switch (dtype) {
    case 'float32':
      return (i) => bytes.readFloatLE(i * 4);
    case 'float64':
      return (i) => bytes.readDoubleLE(i * 8);
    case 'float16':
      return (i) => f16ToF32(bytes.readUInt16LE(i * 2));
    case 'bfloat16': {
      const scratch = Buffer.alloc(4);
      return (i) => {
        scratch.writeUInt32LE((bytes.readUInt16LE(i * 2) << 16) >>> 0, 0);
        return scratch.readFloatLE(0);
      };
    }
    case 'int64':
      return (i) => Number(bytes.readBigInt64LE(i * 8));
    case 'int32':
      return (i) => bytes.readInt32LE(i * 4);
    case 'int16':
      return (i) => bytes.readInt16LE(i * 2);
    case 'int8':
      return (i) => bytes.readInt8(i);
    case 'uint8':
    case 'bool':
      return (i) => bytes[i]!;
    default:
      throw new Error(`unknown dtype ${dtype}`);
  }
}
