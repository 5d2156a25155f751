// Files written to attack the reader: keys that reach Object.prototype, pickle bombs, tensors
// larger than their file, dataset entries that point outside the dataset. Each is refused
// quickly with a message naming the file, and leaves the process as it was.
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../src/config/load.js';
import { loadDataset } from '../src/data/dataset.js';
import { ImageTransform } from '../src/data/transforms.js';
import { readLoraFile } from '../src/models/prior.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { TorchCheckpoint } from '../src/io/torch-checkpoint.js';
import { fixturesDir } from './helpers.js';

const root = mkdtempSync(join(tmpdir(), 'lora-train-hostile-'));

/** Object.prototype's own keys, and a fresh object's view of a key a hostile file writes. */
const prototypeState = () => ({
  keys: Object.getOwnPropertyNames(Object.prototype).sort(),
  polluted: ({} as Record<string, unknown>).polluted,
  A: ({} as Record<string, unknown>).A,
});
const before = prototypeState();

/** A safetensors file whose header is the given JSON text, with `dataBytes` zero bytes after it. */
function rawSafetensors(name: string, header: string, dataBytes: number): string {
  const json = Buffer.from(header);
  const bytes = Buffer.alloc(8 + json.length + dataBytes);
  bytes.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(bytes, 8);
  const file = join(root, name);
  writeFileSync(file, bytes);
  return file;
}

/** A torch.save-style zip (stored entries) holding archive/data.pkl and the given storages. */
function torchZip(name: string, pickle: Buffer, storages: Record<string, Buffer> = {}): string {
  const entries = [
    ['archive/data.pkl', pickle] as const,
    ...Object.entries(storages).map(([k, v]) => [`archive/data/${k}`, v] as const),
  ];
  const locals: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [entry, data] of entries) {
    const nameBytes = Buffer.from(entry);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    const dir = Buffer.alloc(46);
    dir.writeUInt32LE(0x02014b50, 0);
    dir.writeUInt32LE(data.length, 20);
    dir.writeUInt32LE(data.length, 24);
    dir.writeUInt16LE(nameBytes.length, 28);
    dir.writeUInt32LE(offset, 42);
    locals.push(local, nameBytes, data);
    central.push(dir, nameBytes);
    offset += 30 + nameBytes.length + data.length;
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  const file = join(root, name);
  writeFileSync(file, Buffer.concat([...locals, cd, end]));
  return file;
}

// Pickle opcodes, as bytes.
const op = (...codes: number[]) => Buffer.from(codes);
const str = (s: string) => Buffer.concat([op(0x8c, s.length), Buffer.from(s)]);
const PROTO = op(0x80, 2);
const STOP = op(0x2e);

/** Lists of the previous list twice, `levels` deep: a tree of 2^levels leaves in a few bytes. */
function memoBomb(levels: number): Buffer {
  const parts = [PROTO, op(0x5d, 0x71, 0)]; // EMPTY_LIST, BINPUT 0
  for (let i = 1; i <= levels; i++) parts.push(op(0x5d, 0x28, 0x68, i - 1, 0x68, i - 1, 0x65, 0x71, i)); // [prev, prev]
  parts.push(STOP);
  return Buffer.concat(parts);
}

/** `levels` lists, each inside the one before. */
function deepNesting(levels: number): Buffer {
  return Buffer.concat([PROTO, Buffer.alloc(levels, 0x5d), Buffer.alloc(levels - 1, 0x61), STOP]);
}

/** {key: {}} */
const dictWithKey = (key: string) => Buffer.concat([PROTO, op(0x7d), str(key), op(0x7d, 0x73), STOP]);

/** {'w': a float32 tensor of `shape` with strides `stride` over a storage of `numel` elements}. */
function tensorPickle(shape: number[], stride: number[], numel: number): Buffer {
  const global = (m: string, n: string) => Buffer.concat([op(0x63), Buffer.from(`${m}\n${n}\n`)]);
  const tuple = (values: number[]) => Buffer.concat([op(0x28), ...values.map((v) => op(0x4a, ...int32(v))), op(0x74)]);
  const storage = Buffer.concat([
    op(0x28),
    str('storage'),
    global('torch', 'FloatStorage'),
    str('0'),
    str('cpu'),
    op(0x4a, ...int32(numel)),
    op(0x74, 0x51),
  ]);
  const rebuild = Buffer.concat([
    global('torch._utils', '_rebuild_tensor_v2'),
    op(0x28),
    storage,
    op(0x4b, 0),
    tuple(shape),
    tuple(stride),
    op(0x74, 0x52),
  ]);
  return Buffer.concat([PROTO, op(0x7d), str('w'), rebuild, op(0x73), STOP]);
}
function int32(v: number): number[] {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  return [...b];
}

/** Runs fn, expecting an error matching `message` within `ms` milliseconds. */
function expectFastError(fn: () => unknown, message: RegExp | string, ms = 1000): void {
  const start = performance.now();
  expect(fn).toThrow(message);
  expect(performance.now() - start, 'seconds to refuse').toBeLessThan(ms);
}

describe('keys that reach Object.prototype', () => {
  it('a LoRA file with a __proto__ module is refused, and a good file then loads as before', () => {
    const file = join(root, 'lora', 'pytorch_lora_weights.safetensors');
    mkdirSync(join(root, 'lora'), { recursive: true });
    const header = JSON.stringify({
      'prior.__proto__.lora_A.weight': { dtype: 'F32', shape: [1, 1], data_offsets: [0, 4] },
      'prior.blocks.2.attention.to_q.lora_B.weight': { dtype: 'F32', shape: [1, 1], data_offsets: [4, 8] },
    });
    const hostile = rawSafetensors('lora/pytorch_lora_weights.safetensors', header, 8);
    expect(() => readLoraFile(hostile)).toThrow(
      `${file}: not a valid safetensors file: tensor name 'prior.__proto__.lora_A.weight' is not allowed`,
    );
    expect(prototypeState()).toEqual(before);
    const good = join(root, 'good.safetensors');
    const t = { data: new Float32Array(4), shape: [2, 2] };
    writeSafetensors(good, {
      'prior.blocks.2.attention.to_q.lora_A.weight': t,
      'prior.blocks.2.attention.to_q.lora_B.weight': t,
    });
    expect(Object.keys(readLoraFile(good).weights)).toEqual(['blocks.2.attention.to_q']);
    expect(readLoraFile(good).weights['blocks.2.attention.to_q']).toEqual({ A: t, B: t });
  });

  it('a safetensors header with __proto__ metadata is refused', () => {
    const file = rawSafetensors('meta.safetensors', '{"__metadata__": {"__proto__": "x"}}', 0);
    expect(() => readSafetensors(file)).toThrow(`__metadata__ key '__proto__' is not allowed`);
    expect(prototypeState()).toEqual(before);
  });

  it('config files, TypeScript object literals and --cfg-options with such keys are refused, naming them', async () => {
    const json = join(root, 'proto.json');
    writeFileSync(json, '{"train_cfg": {"__proto__": {"polluted": true}}}');
    await expect(loadConfig(json)).rejects.toThrow(
      new ConfigError(`${json}: key 'train_cfg.__proto__' is not allowed: it would reach every object's prototype`),
    );
    const js = join(root, 'proto.mjs');
    writeFileSync(js, 'export default { train_cfg: { __proto__: { polluted: true }, max_epochs: 2 } };');
    await expect(loadConfig(js)).rejects.toThrow(
      `${js}: 'train_cfg' is not a plain object (a __proto__ key sets its prototype)`,
    );
    const plain = join(fixturesDir, 'configs', 'dataset_base.json');
    await expect(loadConfig(plain, ['__proto__.polluted=true'])).rejects.toThrow(
      "--cfg-options __proto__.polluted=true: key '__proto__' is not allowed",
    );
    await expect(loadConfig(plain, ['train_cfg.constructor=1'])).rejects.toThrow(
      "key 'train_cfg.constructor' is not allowed",
    );
    expect(prototypeState()).toEqual(before);
    expect((await loadConfig(plain)).config.train_dataloader.batch_size).toBe(4);
  });

  it('a pickle dict keyed __proto__ or constructor is refused', () => {
    for (const key of ['__proto__', 'constructor']) {
      const file = torchZip(`dict-${key}.pt`, dictWithKey(key));
      expectFastError(() => new TorchCheckpoint(file), `${file}: dict key '${key}' is not allowed`);
    }
    expect(prototypeState()).toEqual(before);
  });
});

describe('LoRA and safetensors fields of the wrong kind', () => {
  const pair = (dir: string, metadata?: Record<string, string>) => {
    mkdirSync(dir, { recursive: true });
    const t = { data: new Float32Array(4), shape: [2, 2] };
    const prefix = metadata ? 'prior.' : 'base_model.model.';
    writeSafetensors(
      join(dir, metadata ? 'pytorch_lora_weights.safetensors' : 'adapter_model.safetensors'),
      { [`${prefix}blocks.2.attention.to_q.lora_A.weight`]: t, [`${prefix}blocks.2.attention.to_q.lora_B.weight`]: t },
      metadata,
    );
    return dir;
  };

  it('names what is wrong in adapter_config.json and lora_adapter_metadata', () => {
    const cases: [string, string][] = [
      ['null', 'not a peft adapter config (expected a JSON object)'],
      ['{"r": 2, "lora_alpha": "8"}', 'adapter_config.json lora_alpha is "8", not a usable value'],
      ['{"r": "2"}', 'adapter_config.json says r = "2", the tensors have rank 2'],
      ['{"lora_dropout": 1.5}', 'adapter_config.json lora_dropout is 1.5, not a usable value'],
      ['{"lora_alpha": 1e39}', 'adapter_config.json lora_alpha is 1e+39, not a usable value'],
      ['{"lora_alpha": 1e400}', 'adapter_config.json lora_alpha is Infinity, not a usable value'],
    ];
    for (const [i, [text, message]] of cases.entries()) {
      const dir = pair(join(root, `peft-${i}`));
      writeFileSync(join(dir, 'adapter_config.json'), text);
      expect(() => readLoraFile(dir)).toThrow(message);
    }
    expect(readLoraFile(pair(join(root, 'meta-ok'), { lora_adapter_metadata: '{"prior.lora_alpha": 8}' })).alpha).toBe(
      8,
    );
    const metadataCases: [string, string][] = [
      ['null', 'lora_adapter_metadata is not a JSON object'],
      ['{"prior.lora_alpha": -1}', "lora_adapter_metadata's prior.lora_alpha is -1, not a usable value"],
    ];
    for (const [text, message] of metadataCases)
      expect(() => readLoraFile(pair(join(root, `meta-${message.length}`), { lora_adapter_metadata: text }))).toThrow(
        message,
      );
  });

  it("refuses a dtype that is a name of Object's prototype", () => {
    const file = rawSafetensors(
      'dtype.safetensors',
      JSON.stringify({ w: { dtype: 'toString', shape: [1], data_offsets: [0, 4] } }),
      4,
    );
    expect(() => readSafetensors(file)).toThrow(`tensor 'w' has unknown dtype "toString"`);
  });
});

describe('bounded work on hostile checkpoints', () => {
  it('refuses a shared-reference bomb in milliseconds', () => {
    const file = torchZip('bomb.pt', memoBomb(60));
    expectFastError(
      () => new TorchCheckpoint(file),
      /bomb\.pt: its objects expand to more than \d+ values \(shared references\)/,
    );
  });

  it('refuses nesting deeper than it reads, without exhausting the stack', () => {
    const file = torchZip('deep.pt', deepNesting(200_000));
    expectFastError(() => new TorchCheckpoint(file), /deep\.pt: its containers nest deeper than 64 levels/);
  });

  it('refuses tensors larger than their storage or the file, naming the file', () => {
    const huge = torchZip('huge.pt', tensorPickle([1 << 30, 1 << 30], [0, 0], 1), { '0': Buffer.alloc(4) });
    const checkpoint = new TorchCheckpoint(huge);
    expectFastError(
      () => checkpoint.tensor(checkpoint.stateDict().get('w')!),
      `${huge}: a tensor of shape [1073741824, 1073741824] is larger than the file holds`,
    );
    checkpoint.close();
    const past = torchZip('past.pt', tensorPickle([8], [1], 8), { '0': Buffer.alloc(4) });
    const short = new TorchCheckpoint(past);
    expect(() => short.tensor(short.stateDict().get('w')!)).toThrow(
      `${past}: archive/data/0 is shorter than a tensor needs`,
    );
    short.close();
    const negative = torchZip('negative.pt', tensorPickle([-4], [1], 8), { '0': Buffer.alloc(32) });
    expect(() => new TorchCheckpoint(negative)).toThrow(`${negative}: a tensor with shape [-4] and strides [1]`);
  });

  it('names the file for anything that is not a checkpoint', () => {
    const junk = join(root, 'junk.pt');
    writeFileSync(junk, 'not a zip at all');
    expect(() => new TorchCheckpoint(junk)).toThrow(`${junk}: not a PyTorch zip checkpoint`);
    const truncated = torchZip('truncated.pt', Buffer.concat([PROTO, op(0x7d), str('w')]));
    expect(() => new TorchCheckpoint(truncated)).toThrow(`${truncated}: pickle ends early`);
  });
});

describe('dataset files', () => {
  const image = async (file: string) =>
    sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 10, g: 20, b: 30 } } })
      .png()
      .toFile(file);

  it('decodes raster images only: an SVG named .png, which could refer to other files, is refused', async () => {
    const svg = Buffer.from(
      `<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><image href="file://${join(root, 'outside-secret.png')}" width="8" height="8"/></svg>`,
    );
    await expect(ImageTransform.geometry(svg)).rejects.toThrow('svg is not an image format lora-train trains on');
    const transform = new ImageTransform([{ type: 'CenterCrop', size: 8 }], 'cfg.ts');
    const plan = { resize: [8, 8] as [number, number], crop: { left: 0, top: 0, width: 8, height: 8 }, flip: false };
    await expect(transform.apply(svg, plan)).rejects.toThrow('svg is not an image format');
  });

  it("refuses file names that leave the dataset's folder, naming the line", async () => {
    const outside = join(root, 'outside-secret.png');
    await image(outside);
    const dir = join(root, 'escape');
    mkdirSync(dir, { recursive: true });
    await image(join(dir, 'a.png'));
    symlinkSync(outside, join(dir, 'link.png'));
    for (const [name, line] of [
      ['../outside-secret.png', 2],
      [outside, 2],
      ['link.png', 2],
    ] as const) {
      writeFileSync(
        join(dir, 'metadata.jsonl'),
        [
          { file_name: 'a.png', text: 'a' },
          { file_name: name, text: 'b' },
        ]
          .map((r) => JSON.stringify(r))
          .join('\n'),
      );
      await expect(loadDataset(dir)).rejects.toThrow(
        `${join(dir, 'metadata.jsonl')}:${line}: '${name}' is outside the dataset's folder`,
      );
    }
  });

  it('takes a byte-order mark in metadata.csv, and names a null line of metadata.jsonl', async () => {
    const dir = join(root, 'bom');
    mkdirSync(dir, { recursive: true });
    await image(join(dir, 'a.png'));
    writeFileSync(join(dir, 'metadata.csv'), '\uFEFFfile_name,text\na.png,a swatch\n');
    expect((await loadDataset(dir)).map((i) => i.captions)).toEqual([['a swatch']]);
    const lines = join(root, 'nulls');
    mkdirSync(lines, { recursive: true });
    writeFileSync(join(lines, 'metadata.jsonl'), '{"file_name": "a.png", "text": "x"}\nnull\n');
    await expect(loadDataset(lines)).rejects.toThrow(`${join(lines, 'metadata.jsonl')}:2: not a JSON object (null)`);
  });

  it('names a parquet file that is not one', async () => {
    const dir = join(root, 'parquet');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'train.parquet'), 'PAR1 this is not parquet');
    await expect(loadDataset(dir)).rejects.toThrow(`${join(dir, 'train.parquet')}: not a readable parquet file`);
  });

  /** The message a load fails with. */
  const failure = (dir: string) =>
    loadDataset(dir).then(
      () => '',
      (e: Error) => e.message,
    );

  it("refuses captions, metadata and parquet files that link out of the dataset's folder, without echoing them", async () => {
    const secret = join(root, 'outside-secret.txt');
    writeFileSync(secret, 'secret-contents\n');
    const caption = join(root, 'caption-link');
    mkdirSync(caption, { recursive: true });
    await image(join(caption, 'a.png'));
    symlinkSync(secret, join(caption, 'a.txt'));
    await expect(loadDataset(caption)).rejects.toThrow(
      `${join(caption, 'a.txt')}: outside the dataset's folder ${caption} (after symlinks); refusing to read it`,
    );
    for (const name of ['metadata.jsonl', 'metadata.csv']) {
      const dir = join(root, `link-${name}`);
      mkdirSync(dir, { recursive: true });
      await image(join(dir, 'a.png'));
      symlinkSync(secret, join(dir, name));
      const message = await failure(dir);
      expect(message).toContain(`${join(dir, name)}: outside the dataset's folder ${dir}`);
      expect(message).not.toContain('secret-contents');
    }
    const parquet = join(root, 'link-parquet');
    mkdirSync(parquet, { recursive: true });
    const snapshots = join(fixturesDir, 'datasets', 'hub', 'datasets--tiny--disc-captions', 'snapshots');
    symlinkSync(
      join(snapshots, '0123456789abcdef0123456789abcdef01234567', 'data', 'train-00000-of-00002.parquet'),
      join(parquet, 'train.parquet'),
    );
    await expect(loadDataset(parquet)).rejects.toThrow(
      `${join(parquet, 'train.parquet')}: outside the dataset's folder ${parquet}`,
    );
    // A snapshot's boundary is its repository's folder: a link past that is refused too.
    const snapshot = join(root, 'datasets--x--y', 'snapshots', 'c1');
    mkdirSync(snapshot, { recursive: true });
    await image(join(snapshot, 'a.png'));
    symlinkSync(secret, join(snapshot, 'a.txt'));
    await expect(loadDataset(snapshot)).rejects.toThrow(`${join(snapshot, 'a.txt')}: outside the dataset's folder`);
  });

  /** A named pipe, and a writer that opens it after a second: a reader blocked on it (as one that
   * does not check the kind of file would be) then sees its end instead of hanging the test. */
  const namedPipe = async (path: string) => {
    const { execFileSync, spawn } = await import('node:child_process');
    execFileSync('mkfifo', [path]);
    const opener = `setTimeout(() => require('node:fs').writeFileSync(${JSON.stringify(path)}, ''), 1000)`;
    const writer = spawn(process.execPath, ['-e', opener], { stdio: 'ignore' });
    return () => writer.kill();
  };

  it.skipIf(process.platform === 'win32')(
    'refuses named pipes and folders where a file is expected: metadata and captions stop the load, images skip their item',
    async () => {
      const stops: (() => void)[] = [];
      try {
        for (const name of ['metadata.jsonl', 'metadata.csv', 'a.txt']) {
          for (const [kind, make] of [
            ['a named pipe', async (p: string) => stops.push(await namedPipe(p))],
            ['a directory', async (p: string) => mkdirSync(p)],
          ] as const) {
            const dir = join(root, `${kind.replace(/\W/g, '-')}-${name}`);
            mkdirSync(dir, { recursive: true });
            await image(join(dir, 'a.png'));
            await make(join(dir, name));
            await expect(loadDataset(dir)).rejects.toThrow(
              `${join(dir, name)}: ${kind}, not a regular file; refusing to read it`,
            );
          }
        }
        const dir = join(root, 'pipe-image');
        mkdirSync(join(dir, 'folder.png'), { recursive: true });
        stops.push(await namedPipe(join(dir, 'pipe.png')));
        writeFileSync(
          join(dir, 'metadata.jsonl'),
          ['pipe.png', 'folder.png'].map((f) => JSON.stringify({ file_name: f, text: 'x' })).join('\n'),
        );
        const items = await loadDataset(dir);
        await expect(items[0]!.image()).rejects.toThrow(
          `${join(dir, 'pipe.png')}: a named pipe, not a regular file; refusing to read it`,
        );
        // The error an image read gives skips its item, as an unreadable image, and names it.
        const { prepareItems } = await import('../src/data/embeddings.js');
        const embedder = { captions: async () => new Map() } as unknown as Parameters<typeof prepareItems>[1];
        const lines: string[] = [];
        const { prepared, skipped } = await prepareItems(items, embedder, {
          concurrency: 1,
          log: (l) => lines.push(l),
        });
        expect(prepared).toEqual([]);
        expect(skipped).toEqual([join(dir, 'pipe.png'), join(dir, 'folder.png')]);
        expect(lines).toEqual([
          `lora-train: skipping ${join(dir, 'pipe.png')}: ${join(dir, 'pipe.png')}: a named pipe, not a regular file; refusing to read it`,
          `lora-train: skipping ${join(dir, 'folder.png')}: ${join(dir, 'folder.png')}: a directory, not a regular file; refusing to read it`,
        ]);
      } finally {
        for (const stop of stops) stop();
      }
    },
    10_000,
  );

  it('reads metadata.csv as RFC 4180, naming the line a record starts on, an unclosed quote and a repeated column', async () => {
    const dir = join(root, 'csv');
    mkdirSync(dir, { recursive: true });
    await image(join(dir, 'a.png'));
    await image(join(dir, 'b.png'));
    const csv = join(dir, 'metadata.csv');
    const rows = '\uFEFFfile_name,text\r\na.png,"two\nlines, ""quoted"""\r\n\r\nb.png,plain\r\n';
    writeFileSync(csv, rows);
    expect((await loadDataset(dir)).map((i) => i.captions)).toEqual([['two\nlines, "quoted"'], ['plain']]);
    writeFileSync(csv, `${rows}c.png\r\n`);
    await expect(loadDataset(dir)).rejects.toThrow(`${csv}:6: no caption column 'text'`);
    writeFileSync(csv, 'file_name,text\na.png,x\nb.png,"never closed\na.png,y\n');
    await expect(loadDataset(dir)).rejects.toThrow(`${csv}:3: a quoted field is never closed`);
    writeFileSync(csv, 'file_name,text,text\na.png,x,y\n');
    await expect(loadDataset(dir)).rejects.toThrow(`${csv}:1: the header names column 'text' twice`);
  });

  it('says a file_name must be a string that names a file, naming the line', async () => {
    const dir = join(root, 'file-names');
    mkdirSync(dir, { recursive: true });
    await image(join(dir, 'a.png'));
    const jsonl = join(dir, 'metadata.jsonl');
    for (const [name, message] of [
      [5, 'file_name must be a string, got 5'],
      [null, 'file_name must be a string, got null'],
      ['', "'' does not name a file"],
      ['.', "'.' does not name a file"],
      ['sub/..', "'sub/..' does not name a file"],
      [undefined, 'no file_name'],
    ] as const) {
      const rows = [
        { file_name: 'a.png', text: 'a' },
        { file_name: name, text: 'b' },
      ];
      writeFileSync(jsonl, rows.map((r) => JSON.stringify(r)).join('\n'));
      await expect(loadDataset(dir)).rejects.toThrow(`${jsonl}:2: ${message}`);
    }
  });
});

describe('lora-train convert on hostile and edge-case checkpoints', () => {
  /** LONG1: any integer, as 16 little-endian two's-complement bytes. */
  const long = (v: number | bigint) => {
    const b = Buffer.alloc(16);
    b.writeBigInt64LE(BigInt.asIntN(64, BigInt(v)), 0);
    b.writeBigInt64LE(BigInt.asIntN(64, BigInt(v) >> 64n), 8);
    return Buffer.concat([op(0x8a, 16), b]);
  };
  const tupleOf = (values: (number | bigint)[]) => Buffer.concat([op(0x28), ...values.map(long), op(0x74)]);
  const global = (m: string, n: string) => Buffer.concat([op(0x63), Buffer.from(`${m}\n${n}\n`)]);
  interface View {
    storage: string;
    key: string;
    numel: number | bigint;
    shape: (number | bigint)[];
    stride?: (number | bigint)[];
    offset?: number | bigint;
  }
  /** The pickle of one _rebuild_tensor_v2 call (row-major strides unless given). */
  const tensorOf = ({ storage, key, numel, shape, stride, offset = 0 }: View) => {
    const rowMajor = shape.map((_, d) => shape.slice(d + 1).reduce<number>((a, b) => a * Number(b), 1));
    const pid = Buffer.concat([op(0x28), str('storage'), global('torch', storage), str(key), str('cpu')]);
    return Buffer.concat([
      global('torch._utils', '_rebuild_tensor_v2'),
      op(0x28),
      pid,
      long(numel),
      op(0x74, 0x51),
      long(offset),
      tupleOf(shape),
      tupleOf(stride ?? rowMajor),
      op(0x74, 0x52),
    ]);
  };
  /** {name: tensor, ...} as a whole pickle. */
  const dictOf = (items: Record<string, Buffer>) =>
    Buffer.concat([PROTO, op(0x7d, 0x28), ...Object.entries(items).flatMap(([k, v]) => [str(k), v]), op(0x75), STOP]);
  const converted = (name: string) => join(root, `${name}.safetensors`);
  // Imported here so that this block adds nothing above it.
  const modules = async () => ({ ...(await import('node:fs')), ...(await import('../src/io/convert.js')) });

  it('writes integer tensors exactly, in their own dtype, however large', async () => {
    const { convertCheckpoint } = await modules();
    const i64 = Buffer.alloc(40);
    const int64s = [16777217n, 2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n), -1n];
    int64s.forEach((v, i) => i64.writeBigInt64LE(v, i * 8));
    const i32 = Buffer.alloc(12);
    [2 ** 31 - 1, -(2 ** 31), 16777217].forEach((v, i) => i32.writeInt32LE(v, i * 4));
    const i16 = Buffer.alloc(4);
    [32767, -32768].forEach((v, i) => i16.writeInt16LE(v, i * 2));
    const file = torchZip(
      'ints.pt',
      dictOf({
        i64: tensorOf({ storage: 'LongStorage', key: '0', numel: 5, shape: [5] }),
        // A transposed view: [[v0, v2], [v1, v3]].
        i64t: tensorOf({ storage: 'LongStorage', key: '0', numel: 5, shape: [2, 2], stride: [1, 2] }),
        i32: tensorOf({ storage: 'IntStorage', key: '1', numel: 3, shape: [3] }),
        i16: tensorOf({ storage: 'ShortStorage', key: '2', numel: 2, shape: [2] }),
        i8: tensorOf({ storage: 'CharStorage', key: '3', numel: 2, shape: [2] }),
        u8: tensorOf({ storage: 'ByteStorage', key: '4', numel: 2, shape: [2] }),
        bool: tensorOf({ storage: 'BoolStorage', key: '5', numel: 2, shape: [1, 2] }),
      }),
      { '0': i64, '1': i32, '2': i16, '3': Buffer.from([0x7f, 0x80]), '4': Buffer.from([0, 255]), '5': op(1, 0) },
    );
    expect(convertCheckpoint(file, converted('ints'))).toBe(7);
    const st = readSafetensors(converted('ints'));
    const bytes = (name: string) => {
      const e = st.entries.get(name)!;
      return { dtype: e.dtype, shape: e.shape, bytes: Buffer.from(st.data.subarray(e.begin, e.end)) };
    };
    expect(bytes('i64')).toEqual({ dtype: 'I64', shape: [5], bytes: i64 });
    expect(bytes('i64t')).toEqual({
      dtype: 'I64',
      shape: [2, 2],
      bytes: Buffer.concat([0, 2, 1, 3].map((i) => i64.subarray(i * 8, i * 8 + 8))),
    });
    expect(bytes('i32')).toEqual({ dtype: 'I32', shape: [3], bytes: i32 });
    expect(bytes('i16')).toEqual({ dtype: 'I16', shape: [2], bytes: i16 });
    expect(bytes('i8')).toEqual({ dtype: 'I8', shape: [2], bytes: Buffer.from([0x7f, 0x80]) });
    expect(bytes('u8')).toEqual({ dtype: 'U8', shape: [2], bytes: Buffer.from([0, 255]) });
    expect(bytes('bool')).toEqual({ dtype: 'BOOL', shape: [1, 2], bytes: op(1, 0) });
    // The fp32 view the model loaders use is unchanged.
    const checkpoint = new TorchCheckpoint(file);
    expect([...checkpoint.tensor(checkpoint.stateDict().get('i8')!).data]).toEqual([127, -128]);
    checkpoint.close();
  });

  it('writes float64 exactly, even past the range of fp32, and still never NaN', async () => {
    const { convertCheckpoint } = await modules();
    const doubles = (...values: number[]) => Buffer.from(Float64Array.from(values).buffer);
    const f64 = (values: Buffer) =>
      torchZip(
        `f64-${values.length}.pt`,
        dictOf({
          w: tensorOf({ storage: 'DoubleStorage', key: '0', numel: values.length / 8, shape: [values.length / 8] }),
        }),
        { '0': values },
      );
    const exact = doubles(0.1, 1e300, -5e-324);
    expect(convertCheckpoint(f64(exact), converted('f64'))).toBe(1);
    const st = readSafetensors(converted('f64'));
    expect(st.entries.get('w')!.dtype).toBe('F64');
    expect(Buffer.from(st.data)).toEqual(exact);
    expect(() => convertCheckpoint(f64(doubles(1, 2, NaN, 3)), converted('f64-nan'))).toThrow(
      `${converted('f64-nan')}: not written: tensor 'w' holds 1 non-finite value of 4 (the first, at index 2, is NaN)`,
    );
  });

  it('names a storage, shape, stride or offset of 2^70, not a JSON error', () => {
    const big = 2n ** 70n;
    const cases: [Partial<View>, string][] = [
      [{ numel: big }, `storage '0' has an element count of ${big}, not a count`],
      [{ shape: [big] }, `a tensor with shape [${big}] and strides [1]`],
      [{ stride: [big] }, `a tensor with shape [4] and strides [${big}]`],
      [{ offset: big }, `a tensor at storage offset ${big}`],
    ];
    for (const [i, [view, message]] of cases.entries()) {
      const pickle = dictOf({ w: tensorOf({ storage: 'FloatStorage', key: '0', numel: 4, shape: [4], ...view }) });
      const file = torchZip(`big-${i}.pt`, pickle, { '0': Buffer.alloc(16) });
      expectFastError(() => new TorchCheckpoint(file), `${file}: ${message}`);
    }
  });

  it('bounds repeated elements by the bytes a storage has, not the count it claims', () => {
    const view = { storage: 'FloatStorage', key: '0', numel: 2 ** 50, shape: [2 ** 20, 2 ** 20], stride: [0, 0] };
    const file = torchZip('claims.pt', dictOf({ w: tensorOf(view) }), { '0': Buffer.alloc(4) });
    const checkpoint = new TorchCheckpoint(file);
    expectFastError(
      () => checkpoint.rawTensor(checkpoint.stateDict().get('w')!),
      `${file}: a tensor of shape [1048576, 1048576] is larger than the file holds`,
    );
    checkpoint.close();
  });

  it('says what the top level or --key is when it is not a dict of tensors', async () => {
    const { convertCheckpoint } = await modules();
    const text = torchZip('text.pt', Buffer.concat([PROTO, str('hello'), STOP]));
    expect(() => convertCheckpoint(text, converted('text'))).toThrow(
      `${text}: the top level is a string, not a dict of tensors`,
    );
    const tensor = Buffer.concat([PROTO, tensorOf({ storage: 'FloatStorage', key: '0', numel: 1, shape: [] }), STOP]);
    const bare = torchZip('bare.pt', tensor, { '0': Buffer.alloc(4) });
    expect(() => convertCheckpoint(bare, converted('bare'))).toThrow(
      `${bare}: the top level is a tensor, not a dict of tensors`,
    );
    const nested = torchZip('nested.pt', dictOf({ w: tensor.subarray(PROTO.length, -1) }), { '0': Buffer.alloc(4) });
    expect(() => convertCheckpoint(nested, converted('nested'), 'w')).toThrow(
      `${nested}: 'w' is a tensor, not a dict of tensors`,
    );
  });

  it('refuses damaged zip64 records and entry sizes beyond the file, naming the file', async () => {
    const { readFileSync } = await modules();
    const pickle = dictOf({ w: tensorOf({ storage: 'FloatStorage', key: '0', numel: 1, shape: [] }) });
    const good = readFileSync(torchZip('zip-good.pt', pickle, { '0': Buffer.alloc(4) }));
    const eocd = good.length - 22;
    const cdOffset = good.readUInt32LE(eocd + 16);
    const cdSize = good.readUInt32LE(eocd + 12);
    const write = (name: string, bytes: Buffer) => {
      const file = join(root, name);
      writeFileSync(file, bytes);
      return file;
    };
    /** The zip with its first central directory entry given a zip64 extra field of `fields`. */
    const zip64Entry = (size32: number, local32: number, fields: bigint[]) => {
      const nameLen = good.readUInt16LE(cdOffset + 28);
      const entry = Buffer.from(good.subarray(cdOffset, cdOffset + 46 + nameLen));
      entry.writeUInt32LE(size32, 24);
      entry.writeUInt32LE(local32, 42);
      const extra = Buffer.alloc(4 + 8 * fields.length);
      extra.writeUInt16LE(1, 0);
      extra.writeUInt16LE(8 * fields.length, 2);
      fields.forEach((f, i) => extra.writeBigUInt64LE(f, 4 + 8 * i));
      entry.writeUInt16LE(extra.length, 30);
      const end = Buffer.from(good.subarray(eocd));
      end.writeUInt32LE(cdSize + extra.length, 12);
      const rest = good.subarray(cdOffset + 46 + nameLen, eocd);
      return Buffer.concat([good.subarray(0, cdOffset), entry, extra, rest, end]);
    };
    const cases: [string, Buffer, string][] = [
      [
        'size32.pt',
        (() => {
          const b = Buffer.from(good);
          b.writeUInt32LE(0xfffffff0, cdOffset + 24);
          return b;
        })(),
        'archive/data.pkl (4294967280 bytes at offset 0) runs past the end of the',
      ],
      ['size64.pt', zip64Entry(0xffffffff, 0, [2n ** 64n - 1n]), 'data.pkl: size 18446744073709551615 is past the end'],
      [
        'local64.pt',
        zip64Entry(0xffffffff, 0xffffffff, [8n, 2n ** 60n]),
        'data.pkl: local header offset 1152921504606846976 is past the end',
      ],
      ['extra-short.pt', zip64Entry(0xffffffff, 0xffffffff, [8n]), 'its zip64 extra field is too short'],
      [
        'zip64-end.pt',
        (() => {
          const locator = Buffer.alloc(20);
          locator.writeUInt32LE(0x07064b50, 0);
          locator.writeBigUInt64LE(2n ** 64n - 1n, 8);
          const end = Buffer.from(good.subarray(eocd));
          end.writeUInt32LE(0xffffffff, 16);
          return Buffer.concat([good.subarray(0, eocd), locator, end]);
        })(),
        'the zip64 end record is outside the file',
      ],
    ];
    for (const [name, bytes, message] of cases) {
      const file = write(name, bytes);
      expectFastError(() => new TorchCheckpoint(file), `${file}: not a PyTorch zip checkpoint: `);
      expect(() => new TorchCheckpoint(file)).toThrow(message);
    }
  });

  it('refuses a tensor name the safetensors reader would refuse, writing nothing', async () => {
    const { convertCheckpoint, existsSync } = await modules();
    for (const name of ['a.__proto__.b', 'constructor.weight', '__metadata__']) {
      const pickle = dictOf({
        ok: tensorOf({ storage: 'FloatStorage', key: '0', numel: 1, shape: [] }),
        [name]: tensorOf({ storage: 'FloatStorage', key: '0', numel: 1, shape: [] }),
      });
      const file = torchZip(`name-${name.length}.pt`, pickle, { '0': Buffer.alloc(4) });
      const out = converted(`name-${name.length}`);
      expect(() => convertCheckpoint(file, out)).toThrow(`${file}: tensor name '${name}' is not allowed`);
      expect(existsSync(out)).toBe(false);
    }
    expect(prototypeState()).toEqual(before);
  });
});
