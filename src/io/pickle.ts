// A pickle machine for torch.save's data.pkl that executes nothing: it knows only the opcodes
// torch.save emits for tensors, numbers, strings and containers, and only the globals that
// rebuild tensors, which it records rather than calls. Any other opcode or global (os.system,
// builtins.eval, a user class, ...) is refused with its name. Its work is bounded by the
// pickle's size: a shared-reference bomb or a deep nesting fails in milliseconds.
import { PROTOTYPE_KEYS } from '../core/untrusted.js';

/** A problem in the pickle; the checkpoint reader adds the file's name. */
export class PickleError extends Error {}

export const STORAGE_DTYPES: Record<string, { dtype: string; bytes: number }> = {
  FloatStorage: { dtype: 'float32', bytes: 4 },
  HalfStorage: { dtype: 'float16', bytes: 2 },
  BFloat16Storage: { dtype: 'bfloat16', bytes: 2 },
  DoubleStorage: { dtype: 'float64', bytes: 8 },
  LongStorage: { dtype: 'int64', bytes: 8 },
  IntStorage: { dtype: 'int32', bytes: 4 },
  ShortStorage: { dtype: 'int16', bytes: 2 },
  CharStorage: { dtype: 'int8', bytes: 1 },
  ByteStorage: { dtype: 'uint8', bytes: 1 },
  BoolStorage: { dtype: 'bool', bytes: 1 },
};

const ALLOWED_GLOBALS = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  ...Object.keys(STORAGE_DTYPES).map((s) => `torch.${s}`),
]);

/** Containers nested deeper than this are refused (a state dict is 2 or 3 deep). */
export const MAX_DEPTH = 64;
/** The unpickled tree may hold this many values per byte of pickle: more means shared
 * references expanding it (each opcode builds at most one value). */
export const MAX_VALUES_PER_BYTE = 4;

class Global {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get qualified() {
    return `${this.module}.${this.name}`;
  }
}

/** A storage a persistent id names: its element type and the archive entry holding it. */
export class StorageRef {
  constructor(
    readonly dtype: string,
    readonly bytesPerElement: number,
    readonly key: string,
    readonly numel: number,
  ) {}
}

/** A tensor inside a checkpoint: where its elements are; read it with TorchCheckpoint.tensor. */
export class TensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
  get dtype(): string {
    return this.storage.dtype;
  }
}

const MARK = Symbol('mark');
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** A pickled value for an error message. Not JSON.stringify: it throws on the bigints LONG1
 * makes of integers past 2^53, and those are exactly the values a message must show. */
export function show(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(show).join(', ')}]`;
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  if (value === null) return 'None';
  if (value instanceof TensorRef) return 'a tensor';
  if (value instanceof StorageRef) return 'a storage';
  if (value instanceof Global) return value.qualified;
  if (Buffer.isBuffer(value)) return 'bytes';
  return value instanceof Map ? 'a dict' : typeof value;
}

class Machine {
  pos = 0;
  readonly stack: unknown[] = [];
  readonly memo = new Map<number, unknown>();
  at = 0;

  constructor(readonly data: Buffer) {}

  fail(problem: string): never {
    throw new PickleError(`${problem} (at byte ${this.at} of data.pkl)`);
  }

  take(n: number): number {
    if (this.pos + n > this.data.length) this.fail('pickle ends early');
    const at = this.pos;
    this.pos += n;
    return at;
  }

  pop(): unknown {
    if (this.stack.length === 0 || this.stack.at(-1) === MARK) this.fail('pops an empty stack');
    return this.stack.pop();
  }

  top(): unknown {
    if (this.stack.length === 0) this.fail('reads an empty stack');
    return this.stack.at(-1);
  }

  popMark(): unknown[] {
    const i = this.stack.lastIndexOf(MARK);
    if (i < 0) this.fail('MARK missing');
    const items = this.stack.splice(i + 1);
    this.stack.pop();
    return items;
  }

  line(): string {
    const end = this.data.indexOf(0x0a, this.pos);
    if (end < 0) this.fail('unterminated text');
    const s = this.data.toString('utf8', this.pos, end);
    this.pos = end + 1;
    return s;
  }

  text(n: number): string {
    const at = this.take(n);
    return this.data.toString('utf8', at, at + n);
  }

  memoGet(index: number): unknown {
    if (!this.memo.has(index)) this.fail(`memo entry ${index} was never stored`);
    return this.memo.get(index);
  }

  setItems(items: unknown[]): void {
    const dict = this.top();
    if (!(dict instanceof Map)) this.fail('SETITEM(S) on something that is not a dict');
    if (items.length % 2) this.fail('SETITEMS with a key and no value');
    for (let i = 0; i < items.length; i += 2) {
      const key = items[i];
      if (typeof key === 'string' && PROTOTYPE_KEYS.has(key))
        this.fail(`dict key '${key}' is not allowed (it names an object prototype)`);
      (dict as Map<unknown, unknown>).set(key, items[i + 1]);
    }
  }

  append(items: unknown[]): void {
    const list = this.top();
    if (!Array.isArray(list) || Object.isFrozen(list)) this.fail('APPEND(S) on something that is not a list');
    (list as unknown[]).push(...items);
  }

  global(module: string, name: string): Global {
    const g = new Global(module, name);
    if (!ALLOWED_GLOBALS.has(g.qualified))
      this.fail(
        `refuses to unpickle the global ${g.qualified}: lora-train reads only tensors, numbers, strings and containers, and never runs code from a checkpoint`,
      );
    return g;
  }

  /** A persistent id (storage, FloatStorage, key, location, numel) as a StorageRef. */
  storage(pid: unknown): StorageRef {
    if (!Array.isArray(pid) || pid[0] !== 'storage' || !(pid[1] instanceof Global))
      this.fail('unsupported persistent id');
    const type = pid[1];
    const kind = Object.hasOwn(STORAGE_DTYPES, type.name) ? STORAGE_DTYPES[type.name] : undefined;
    if (!kind || type.module !== 'torch') this.fail(`unsupported storage type ${type.qualified}`);
    const [, , key, , numel] = pid as unknown[];
    if (typeof key !== 'string') this.fail('a storage without a key');
    if (!isCount(numel)) this.fail(`storage '${key}' has an element count of ${show(numel)}, not a count`);
    return new StorageRef(kind.dtype, kind.bytes, key, numel);
  }

  /** The result of calling an allowed global: recorded, never run. */
  reduce(fn: unknown, args: unknown): unknown {
    if (!(fn instanceof Global)) this.fail('REDUCE of something that is not an allowed global');
    if (!Array.isArray(args)) this.fail(`${fn.qualified} called without an argument tuple`);
    switch (fn.qualified) {
      case 'collections.OrderedDict':
        return new Map();
      case 'torch._utils._rebuild_tensor_v2': {
        const [storage, offset, size, stride] = args as unknown[];
        if (!(storage instanceof StorageRef)) this.fail('_rebuild_tensor_v2 without a storage');
        if (!isCount(offset)) this.fail(`a tensor at storage offset ${show(offset)}`);
        if (!Array.isArray(size) || !Array.isArray(stride)) this.fail('_rebuild_tensor_v2 without a view');
        if (!size.every(isCount) || !stride.every(isCount) || size.length !== stride.length)
          this.fail(`a tensor with shape ${show(size)} and strides ${show(stride)}`);
        return new TensorRef(storage, offset, [...size] as number[], [...stride] as number[]);
      }
      case 'torch._utils._rebuild_parameter':
        return args[0];
      default:
        return this.fail(`${fn.qualified} cannot be called`);
    }
  }
}

type Op = (m: Machine) => unknown;
const push =
  (make: (m: Machine) => unknown): Op =>
  (m) =>
    m.stack.push(make(m));
const tuple = (n: number): Op =>
  push((m) => {
    const items: unknown[] = [];
    for (let i = 0; i < n; i++) items.unshift(m.pop());
    return Object.freeze(items);
  });

/** Every opcode torch.save's pickles use, by byte. */
const OPS: Record<number, Op> = {
  0x80: (m) => m.take(1), // PROTO
  0x95: (m) => m.take(8), // FRAME
  0x28: (m) => m.stack.push(MARK), // MARK
  0x7d: push(() => new Map()), // EMPTY_DICT
  0x5d: push(() => []), // EMPTY_LIST
  0x29: tuple(0), // EMPTY_TUPLE
  0x74: push((m) => Object.freeze(m.popMark())), // TUPLE
  0x85: tuple(1), // TUPLE1
  0x86: tuple(2), // TUPLE2
  0x87: tuple(3), // TUPLE3
  0x71: (m) => m.memo.set(m.data[m.take(1)]!, m.top()), // BINPUT
  0x72: (m) => m.memo.set(m.data.readUInt32LE(m.take(4)), m.top()), // LONG_BINPUT
  0x94: (m) => m.memo.set(m.memo.size, m.top()), // MEMOIZE
  0x68: push((m) => m.memoGet(m.data[m.take(1)]!)), // BINGET
  0x6a: push((m) => m.memoGet(m.data.readUInt32LE(m.take(4)))), // LONG_BINGET
  0x4a: push((m) => m.data.readInt32LE(m.take(4))), // BININT
  0x4b: push((m) => m.data[m.take(1)]), // BININT1
  0x4d: push((m) => m.data.readUInt16LE(m.take(2))), // BININT2
  0x8a: push((m) => long(m, m.data[m.take(1)]!)), // LONG1
  0x47: push((m) => m.data.readDoubleBE(m.take(8))), // BINFLOAT
  0x4e: push(() => null), // NONE
  0x88: push(() => true), // NEWTRUE
  0x89: push(() => false), // NEWFALSE
  0x58: push((m) => m.text(m.data.readUInt32LE(m.take(4)))), // BINUNICODE
  0x8c: push((m) => m.text(m.data[m.take(1)]!)), // SHORT_BINUNICODE
  0x8d: push((m) => m.text(Number(m.data.readBigUInt64LE(m.take(8))))), // BINUNICODE8
  0x43: push((m) => bytes(m, m.data[m.take(1)]!)), // SHORT_BINBYTES
  0x42: push((m) => bytes(m, m.data.readUInt32LE(m.take(4)))), // BINBYTES
  0x73: (m) => {
    const v = m.pop();
    m.setItems([m.pop(), v]);
  }, // SETITEM
  0x75: (m) => m.setItems(m.popMark()), // SETITEMS
  0x61: (m) => m.append([m.pop()]), // APPEND
  0x65: (m) => m.append(m.popMark()), // APPENDS
  0x63: push((m) => m.global(m.line(), m.line())), // GLOBAL
  0x93: (m) => {
    const name = m.pop();
    m.stack.push(m.global(String(m.pop()), String(name)));
  }, // STACK_GLOBAL
  0x51: push((m) => m.storage(m.pop())), // BINPERSID
  0x52: (m) => {
    const args = m.pop();
    m.stack.push(m.reduce(m.pop(), args));
  }, // REDUCE
  // BUILD: an OrderedDict's state (version metadata) carries nothing lora-train needs.
  0x62: (m) => {
    m.pop();
    const target = m.top();
    if (!(target instanceof Map) && !(target instanceof TensorRef))
      m.fail('BUILD on an object lora-train does not rebuild');
  },
};

/** A little-endian two's-complement integer of n bytes, as a number when it is safe. */
function long(m: Machine, n: number): number | bigint {
  const at = m.take(n);
  let v = 0n;
  for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(m.data[at + i]!);
  if (n > 0 && m.data[at + n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

function bytes(m: Machine, n: number): Buffer {
  const at = m.take(n);
  return m.data.subarray(at, at + n);
}

/** Runs the pickle; returns the object STOP finds on the stack. */
export function unpickle(data: Buffer): unknown {
  const m: Machine = new Machine(data);
  for (;;) {
    m.at = m.pos;
    const op = data[m.take(1)]!;
    if (op === 0x2e) return m.pop(); // STOP
    const run = OPS[op];
    if (!run)
      return m.fail(
        `pickle opcode 0x${op.toString(16)} is not one torch.save emits for tensors and containers; refusing the file`,
      );
    run(m);
  }
}

/** The unpickled value as plain data: dicts with string keys become objects (others stay
 * Maps), lists and tuples arrays. Refuses nesting deeper than MAX_DEPTH and a tree of more
 * than `maxValues` values. */
export function toPlain(root: unknown, maxValues: number): unknown {
  let values = 0;
  const convert = (value: unknown, depth: number): unknown => {
    if (++values > maxValues)
      throw new PickleError(
        `its objects expand to more than ${maxValues} values (shared references), refusing the file`,
      );
    if (!(value instanceof Map) && !Array.isArray(value)) return value;
    if (depth >= MAX_DEPTH)
      throw new PickleError(`its containers nest deeper than ${MAX_DEPTH} levels, refusing the file`);
    if (Array.isArray(value)) return value.map((v) => convert(v, depth + 1));
    const entries = [...(value as Map<unknown, unknown>)].map(([k, v]) => [k, convert(v, depth + 1)] as const);
    return entries.every(([k]) => typeof k === 'string') ? Object.fromEntries(entries) : new Map(entries);
  };
  return convert(root, 0);
}
