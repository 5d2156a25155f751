// Models and datasets from the Hub on first use, against a Hub on loopback (tests/hub-server.ts)
// serving a tiny model stack and a parquet dataset: the training job from an empty cache and
// again offline; the cache layout huggingface_hub uses (and Python's huggingface_hub reading
// and writing it); gated and missing repositories; 5xx, cut connections, resumes, corrupt
// bytes; processes starting together; `lora-train download`.
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/load.js';
import { fetchRepo } from '../src/hub/download.js';
import { decoderSnapshotNeeds, fileNeeds, priorSnapshotNeeds } from '../src/hub/needs.js';
import { hubSettings } from '../src/hub/settings.js';
import { createTinyStack } from '../src/models/tiny.js';
import { train } from '../src/train/train.js';
import { type HubRepo, LoopbackHub } from './hub-server.js';
import { TINY_DATASET_SNAPSHOT, fixturesDir, logLosses, settings, tinyTrainingConfig } from './helpers.js';

const root = mkdtempSync(join(tmpdir(), 'lora-train-hub-'));
const repoRoot = resolve(import.meta.dirname, '..');
const bin = join(repoRoot, 'bin', 'lora-train.js');
const stack = createTinyStack(join(root, 'stack'), { seed: 1, tokenizer: join(repoRoot, 'assets', 'clip-tokenizer') });
const datasetSnapshot = TINY_DATASET_SNAPSHOT;

/** path -> bytes of every file under dir (following links). */
function filesOf(dir: string, prefix = ''): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const name of readdirSync(join(dir, prefix))) {
    const rel = prefix ? `${prefix}/${name}` : name;
    if (statSync(join(dir, rel)).isDirectory()) for (const [p, b] of filesOf(dir, rel)) out.set(p, b);
    else out.set(rel, readFileSync(join(dir, rel)));
  }
  return out;
}

/** The prior snapshot as a Hub repository, with files the job must not fetch beside its own. */
function priorRepo(id: string, token?: string): HubRepo {
  const files = filesOf(stack.snapshot);
  const weights = files.get('prior/diffusion_pytorch_model.safetensors')!;
  files.set('prior/diffusion_pytorch_model.fp16.safetensors', weights);
  files.set('prior/diffusion_pytorch_model.bin', Buffer.alloc(4096, 7));
  files.set('text_encoder/pytorch_model.bin', Buffer.alloc(4096, 9));
  return { kind: 'model', id, files, token };
}

const effnetRepo = (id: string, file: string, bytes: Buffer): HubRepo => ({
  kind: 'model',
  id,
  files: new Map([
    [file, bytes],
    ['model_v2_stage_c.pt', Buffer.alloc(8192, 3)],
  ]),
});

const datasetRepo = (id: string): HubRepo => ({ kind: 'dataset', id, files: filesOf(datasetSnapshot) });

function hubConfig(name: string, overrides: Record<string, unknown> = {}): string {
  const config = tinyTrainingConfig(stack, {
    model: {
      prior_model: 'tiny/wuerstchen-prior',
      image_encoder: { repo: 'tiny/effnet', file: 'effnet.safetensors', config: stack.imageEncoderConfig },
      prior_lora_config: { r: 4, lora_alpha: 4 },
    },
    train_cfg: { by_epoch: false, max_iters: 3 },
    ...overrides,
  });
  (config.train_dataloader as { dataset: { dataset: string } }).dataset.dataset = 'tiny/disc-captions';
  const file = join(root, `${name}.json`);
  writeFileSync(file, JSON.stringify(config));
  return file;
}

const ENV_KEYS = ['HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HOME', 'HF_TOKEN', 'HF_HUB_OFFLINE', 'HF_TOKEN_PATH'] as const;
let savedEnv: Record<string, string | undefined> = {};
beforeEach(() => {
  savedEnv = Object.fromEntries(ENV_KEYS.map((k) => [k, process.env[k]]));
  for (const k of ENV_KEYS) delete process.env[k];
  process.env.HF_HOME = mkdtempSync(join(root, 'home-'));
});
afterEach(() => {
  for (const k of ENV_KEYS) {
    if (savedEnv[k] === undefined) delete process.env[k];
    else process.env[k] = savedEnv[k];
  }
});

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const gitSha1 = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const quiet = () => undefined;

describe('training from the Hub', () => {
  const hub = new LoopbackHub([
    priorRepo('tiny/wuerstchen-prior'),
    effnetRepo('tiny/effnet', 'effnet.safetensors', readFileSync(stack.imageEncoder)),
    datasetRepo('tiny/disc-captions'),
  ]);
  let endpoint = '';
  beforeAll(async () => {
    endpoint = await hub.start();
  });
  afterAll(() => hub.stop());

  it('downloads what the config needs into an empty cache, in the layout huggingface_hub uses, then trains offline from it', async () => {
    process.env.HF_ENDPOINT = endpoint;
    const cache = join(process.env.HF_HOME!, 'hub');
    const run = async (dir: string) => {
      const lines: string[] = [];
      await train({
        config: await loadConfig(hubConfig(dir), settings({ work_dir: join(root, dir) })),
        log: (l) => lines.push(l),
        cacheDir: join(root, `${dir}-embeddings`),
      });
      return lines;
    };
    const online = await run('online');
    expect(online.join('\n')).toMatch(/tiny\/wuerstchen-prior \(model.prior_model\): \d+ files, .* downloaded now/);
    const prior = join(cache, 'models--tiny--wuerstchen-prior');
    const commit = hub.commitOf('model', 'tiny/wuerstchen-prior');
    expect(readFileSync(join(prior, 'refs', 'main'), 'utf8')).toBe(commit);
    const snapshot = join(prior, 'snapshots', commit);
    const fetched = filesOf(snapshot);
    expect([...fetched.keys()].sort()).toEqual([
      'model_index.json',
      'prior/config.json',
      'prior/diffusion_pytorch_model.safetensors',
      'text_encoder/config.json',
      'text_encoder/model.safetensors',
      'tokenizer/special_tokens_map.json',
      'tokenizer/tokenizer.json',
      'tokenizer/tokenizer_config.json',
    ]);
    for (const [path, bytes] of fetched) {
      const link = join(snapshot, path);
      expect(lstatSync(link).isSymbolicLink(), path).toBe(true);
      const hash = bytes.length >= 1024 ? sha256(bytes) : gitSha1(bytes);
      expect(readlinkSync(link), path).toBe(relative(join(link, '..'), join(prior, 'blobs', hash)));
    }
    expect(existsSync(join(cache, 'datasets--tiny--disc-captions', 'refs', 'main'))).toBe(true);
    expect(readdirSync(join(cache, 'models--tiny--effnet', 'blobs'))).toHaveLength(1); // not the stage C decoy

    await hub.stop();
    process.env.HF_HUB_OFFLINE = '1';
    await run('offline');
    expect(logLosses(join(root, 'offline'))).toEqual(logLosses(join(root, 'online')));
    await hub.start().then((url) => expect(url).toBeTruthy());
  }, 120_000);
});

describe('what a decoder snapshot needs', () => {
  it("fetches warp-ai/wuerstchen's decoder, VQGAN, text encoder and tokenizer, no .bin or fp16 files", () => {
    const weights = (folder: string, stem: string) =>
      [`${stem}.safetensors`, `${stem}.fp16.safetensors`, `${stem}.bin`].map((f) => `${folder}/${f}`);
    const paths = [
      'model_index.json',
      'README.md',
      'scheduler/scheduler_config.json',
      ...['decoder', 'vqgan', 'text_encoder'].map((f) => `${f}/config.json`),
      ...weights('decoder', 'diffusion_pytorch_model'),
      ...weights('vqgan', 'diffusion_pytorch_model'),
      ...weights('text_encoder', 'model'),
      'tokenizer/tokenizer.json',
      'tokenizer/tokenizer_config.json',
    ];
    expect(decoderSnapshotNeeds('warp-ai/wuerstchen')(paths).sort()).toEqual(
      [
        'decoder/config.json',
        'decoder/diffusion_pytorch_model.safetensors',
        'vqgan/config.json',
        'vqgan/diffusion_pytorch_model.safetensors',
        'text_encoder/config.json',
        'text_encoder/model.safetensors',
        'tokenizer/tokenizer.json',
        'tokenizer/tokenizer_config.json',
      ].sort(),
    );
  });
});

describe('Hub faults', () => {
  const weights = 'prior/diffusion_pytorch_model.safetensors';
  const needs = priorSnapshotNeeds('tiny/prior', false);
  const request = (id: string) => ({
    id,
    kind: 'model' as const,
    revision: 'main',
    key: 'model.prior_model',
    settings: hubSettings(),
  });

  async function withHub<T>(
    repos: HubRepo[],
    faults: ConstructorParameters<typeof LoopbackHub>[1],
    body: (hub: LoopbackHub) => Promise<T>,
  ) {
    const hub = new LoopbackHub(repos, faults);
    process.env.HF_ENDPOINT = await hub.start();
    try {
      return await body(hub);
    } finally {
      await hub.stop();
    }
  }

  it('a gated repository: 401 says which repository and how to log in; the token file and HF_TOKEN are used', async () => {
    await withHub([priorRepo('tiny/prior', 'hf_secret')], {}, async () => {
      await expect(fetchRepo(request('tiny/prior'), needs, quiet)).rejects.toThrow(
        /model 'tiny\/prior' \(model.prior_model, revision main\): the Hub refused access \(HTTP 401\).*gated or private.*HF_TOKEN.*huggingface-cli login/,
      );
      process.env.HF_TOKEN = 'hf_wrong';
      await expect(fetchRepo(request('tiny/prior'), needs, quiet)).rejects.toThrow(
        /HTTP 403.*The token from HF_TOKEN was sent and refused/,
      );
      delete process.env.HF_TOKEN;
      writeFileSync(join(process.env.HF_HOME!, 'token'), 'hf_secret\n');
      const fetched = await fetchRepo(request('tiny/prior'), needs, quiet);
      expect(existsSync(join(fetched.snapshot, weights))).toBe(true);
    });
  });

  it('a commit as the revision: its snapshot, no ref; a branch: refs/<branch>', async () => {
    await withHub([priorRepo('tiny/prior')], {}, async (hub) => {
      const commit = hub.commitOf('model', 'tiny/prior');
      const repo = join(process.env.HF_HOME!, 'hub', 'models--tiny--prior');
      const pinned = await fetchRepo({ ...request('tiny/prior'), revision: commit }, needs, quiet);
      expect(pinned.snapshot).toBe(join(repo, 'snapshots', commit));
      expect(existsSync(join(repo, 'refs'))).toBe(false);
      await fetchRepo(request('tiny/prior'), needs, quiet);
      expect(readFileSync(join(repo, 'refs', 'main'), 'utf8')).toBe(commit);
    });
  });

  it('a missing repository or revision: 404 names it', async () => {
    await withHub([priorRepo('tiny/prior')], {}, async () => {
      await expect(fetchRepo(request('tiny/nope'), needs, quiet)).rejects.toThrow(
        /model 'tiny\/nope' \(model.prior_model, revision main\): not found on http:\/\/127.0.0.1:\d+ \(HTTP 404\)/,
      );
      await expect(fetchRepo({ ...request('tiny/prior'), revision: 'v9' }, needs, quiet)).rejects.toThrow(
        /revision v9\): not found/,
      );
    });
  });

  it('a 503, then a connection cut mid-file: retried, resumed with a Range request, checked', async () => {
    const faults = { unavailableOnce: new Set([weights]), cutAfter: new Map([[weights, 3000]]) };
    await withHub([priorRepo('tiny/prior')], faults, async (hub) => {
      const lines: string[] = [];
      const fetched = await fetchRepo(request('tiny/prior'), needs, (l) => lines.push(l));
      const bytes = readFileSync(join(stack.snapshot, weights));
      expect(readFileSync(join(fetched.snapshot, weights)).equals(bytes)).toBe(true);
      expect(lines.join('\n')).toMatch(
        /diffusion_pytorch_model.safetensors: try again later\. URL: .*\/cdn\/.*; retrying in 0.5 s/,
      );
      expect(hub.requests.some((r) => r.path.startsWith('/cdn/') && r.range === `bytes=3000-${bytes.length - 1}`)).toBe(
        true,
      );
    });
  });

  it('a download interrupted in an earlier run resumes where it stopped', async () => {
    await withHub([priorRepo('tiny/prior')], {}, async (hub) => {
      const bytes = readFileSync(join(stack.snapshot, weights));
      const blobs = join(process.env.HF_HOME!, 'hub', 'models--tiny--prior', 'blobs');
      mkdirSync(blobs, { recursive: true });
      writeFileSync(join(blobs, `${sha256(bytes)}.incomplete`), bytes.subarray(0, 5000));
      const lines: string[] = [];
      const fetched = await fetchRepo(request('tiny/prior'), needs, (l) => lines.push(l));
      expect(readFileSync(join(fetched.snapshot, weights)).equals(bytes)).toBe(true);
      expect(lines.join('\n')).toMatch(/resuming tiny\/prior\/prior\/diffusion_pytorch_model.safetensors at 5.0 kB/);
      expect(
        hub.requests.filter((r) => r.path.startsWith('/cdn/') && r.range !== 'bytes=0-0').map((r) => r.range),
      ).toContain(`bytes=5000-${bytes.length - 1}`);
    });
  });

  it('corrupt bytes: refused by their sha256, nothing enters the snapshot', async () => {
    await withHub([priorRepo('tiny/prior')], { corrupt: new Set([weights]) }, async () => {
      await expect(fetchRepo(request('tiny/prior'), needs, quiet)).rejects.toThrow(
        /sha256 is [0-9a-f]{64}, the Hub lists/,
      );
      const repo = join(process.env.HF_HOME!, 'hub', 'models--tiny--prior');
      expect(readdirSync(join(repo, 'blobs')).filter((b) => b.endsWith('.incomplete'))).toEqual([]);
      const snapshots = join(repo, 'snapshots');
      const linked = existsSync(snapshots) ? [...filesOf(snapshots).keys()] : [];
      expect(linked.filter((p) => p.endsWith(weights))).toEqual([]);
    });
  });

  it('a full disk: an error naming it and the cache, which stays valid', async () => {
    await withHub([priorRepo('tiny/prior')], {}, async () => {
      const bytes = readFileSync(join(stack.snapshot, weights));
      const blobs = join(process.env.HF_HOME!, 'hub', 'models--tiny--prior', 'blobs');
      mkdirSync(blobs, { recursive: true });
      // Writes to /dev/full fail with ENOSPC, as on a full disk.
      symlinkSync('/dev/full', join(blobs, `${sha256(bytes)}.incomplete`));
      await expect(fetchRepo(request('tiny/prior'), needs, quiet)).rejects.toThrow(
        /file prior\/diffusion_pytorch_model.safetensors .*: the disk is full \(ENOSPC\) under .*hub: free space, or point HF_HUB_CACHE at a larger disk/,
      );
      expect(existsSync(join(blobs, sha256(bytes)))).toBe(false);
      const snapshots = join(process.env.HF_HOME!, 'hub', 'models--tiny--prior', 'snapshots');
      expect([...filesOf(snapshots).keys()].filter((p) => p.endsWith(weights))).toEqual([]);
    });
  });

  it('offline with an empty cache: a clear error, no network', async () => {
    process.env.HF_HUB_OFFLINE = '1';
    await expect(fetchRepo(request('tiny/prior'), needs, quiet)).rejects.toThrow(
      /model 'tiny\/prior' \(model.prior_model, revision main\) is not in the cache and HF_HUB_OFFLINE=1 forbids the network. Run `lora-train download --config <config>`/,
    );
  });

  it('only the file a config names: one file of a repository', async () => {
    const bytes = readFileSync(stack.imageEncoder);
    await withHub([effnetRepo('tiny/effnet', 'effnet.safetensors', bytes)], {}, async (hub) => {
      const fetched = await fetchRepo(
        { ...request('tiny/effnet'), key: 'model.image_encoder.repo' },
        fileNeeds('tiny/effnet', 'effnet.safetensors'),
        quiet,
      );
      expect([...filesOf(fetched.snapshot).keys()]).toEqual(['effnet.safetensors']);
      expect(hub.downloads('model_v2_stage_c.pt')).toBe(0);
    });
  });
});

describe('lora-train download', () => {
  it('fetches what a config needs and exits, each file once when two processes start together', async () => {
    const repos = [
      priorRepo('tiny/wuerstchen-prior'),
      effnetRepo('tiny/effnet', 'effnet.safetensors', readFileSync(stack.imageEncoder)),
      datasetRepo('tiny/disc-captions'),
    ];
    const hub = new LoopbackHub(repos, { delayMs: 300 });
    const endpoint = await hub.start();
    try {
      const env = { ...process.env, HF_ENDPOINT: endpoint, LORA_TRAIN_NATIVE: process.env.LORA_TRAIN_NATIVE ?? '' };
      const config = hubConfig('download');
      const runs = [0, 1].map(
        () =>
          new Promise<{ code: number | null; out: string }>((done) => {
            const child = spawn(process.execPath, [bin, 'download', '--config', config], { env });
            let out = '';
            child.stdout.on('data', (d: Buffer) => (out += d.toString()));
            child.stderr.on('data', (d: Buffer) => (out += d.toString()));
            child.on('close', (code) => done({ code, out }));
          }),
      );
      const results = await Promise.all(runs);
      for (const r of results) expect(r.code, r.out).toBe(0);
      expect(results[0]!.out).toMatch(/lora-train: 3 repositories, .* in .*hub/);
      expect(results.map((r) => r.out).join('\n')).toMatch(/waiting for another process downloading/);
      for (const path of [
        'prior/diffusion_pytorch_model.safetensors',
        'text_encoder/model.safetensors',
        'effnet.safetensors',
      ])
        expect(hub.downloads(path), path).toBe(1);
    } finally {
      await hub.stop();
    }
  }, 60_000);
});

/** A Python with huggingface_hub: LORA_TRAIN_HF_PYTHON, else python3 when it has the package. */
function hfPython(): string | undefined {
  const candidates = [process.env.LORA_TRAIN_HF_PYTHON, 'python3'].filter(Boolean) as string[];
  return candidates.find((py) => spawnSync(py, ['-c', 'import huggingface_hub'], { stdio: 'ignore' }).status === 0);
}
const python = hfPython();
if (!python && process.env.LORA_TRAIN_REQUIRE_HF_HUB)
  throw new Error(
    'LORA_TRAIN_REQUIRE_HF_HUB is set but no Python with huggingface_hub was found (LORA_TRAIN_HF_PYTHON)',
  );

describe.skipIf(!python)("the cache shared with Python's huggingface_hub", () => {
  // Asynchronous: the Hub on loopback answers from this process's event loop.
  const runPython = (code: string, env: NodeJS.ProcessEnv) =>
    new Promise<string>((done, fail) => {
      const child = spawn(python!, ['-c', code], { env: { ...process.env, ...env } });
      let [out, err] = ['', ''];
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('close', (code) => (code === 0 ? done(out.trim()) : fail(new Error(`python exited ${code}: ${err}`))));
    });

  it("the shipped real config runs on a cache huggingface_hub's snapshot_download wrote, offline", async () => {
    const repos = [
      priorRepo('warp-ai/wuerstchen-prior'),
      effnetRepo(
        'dome272/wuerstchen',
        'model_v2_stage_b.pt',
        readFileSync(join(fixturesDir, 'image_encoder', 'tiny_effnet.pt')),
      ),
      datasetRepo('lambdalabs/pokemon-blip-captions'),
    ];
    const hub = new LoopbackHub(repos);
    const endpoint = await hub.start();
    const cache = join(process.env.HF_HOME!, 'hub');
    try {
      await runPython(
        [
          'from huggingface_hub import snapshot_download',
          "snapshot_download('warp-ai/wuerstchen-prior')",
          "snapshot_download('dome272/wuerstchen')",
          "snapshot_download('lambdalabs/pokemon-blip-captions', repo_type='dataset')",
        ].join('\n'),
        { HF_ENDPOINT: endpoint, HF_HUB_CACHE: cache, HF_HUB_DISABLE_XET: '1' },
      );
    } finally {
      await hub.stop();
    }
    process.env.HF_HUB_OFFLINE = '1';
    const overrides = [
      `model.image_encoder.config=${join(fixturesDir, 'image_encoder', 'tiny_effnet.config.json')}`,
      'train_cfg.max_iters=2',
      'train_dataloader.batch_size=2',
      'train_dataloader.dataset.subset=4',
    ];
    const loaded = await loadConfig('wuerstchen_prior_lora_pokemon_blip', [
      ...overrides,
      ...settings({ work_dir: join(root, 'shipped') }),
    ]);
    const lines: string[] = [];
    const result = await train({
      config: loaded,
      log: (l) => lines.push(l),
      cacheDir: join(root, 'shipped-embeddings'),
    });
    expect(result.steps).toBe(2);
    expect(lines.join('\n')).toMatch(/VisualizationHook skipped on the CPU/);
  }, 120_000);

  it('huggingface_hub finds in the cache what lora-train downloaded', async () => {
    const hub = new LoopbackHub([priorRepo('tiny/wuerstchen-prior')]);
    process.env.HF_ENDPOINT = await hub.start();
    const cache = join(process.env.HF_HOME!, 'hub');
    let snapshot: string;
    try {
      snapshot = (
        await fetchRepo(
          {
            id: 'tiny/wuerstchen-prior',
            kind: 'model',
            revision: 'main',
            key: 'model.prior_model',
            settings: hubSettings(),
          },
          priorSnapshotNeeds('tiny/wuerstchen-prior', true),
          quiet,
        )
      ).snapshot;
    } finally {
      await hub.stop();
    }
    const out = await runPython(
      [
        'import json',
        'from huggingface_hub import hf_hub_download, scan_cache_dir',
        "p = hf_hub_download('tiny/wuerstchen-prior', 'prior/diffusion_pytorch_model.safetensors', local_files_only=True)",
        'info = scan_cache_dir()',
        'print(json.dumps({"path": p, "warnings": [str(w) for w in info.warnings], "repos": [r.repo_id for r in info.repos], "files": sorted(f.file_name for r in info.repos for rev in r.revisions for f in rev.files)}))',
      ].join('\n'),
      { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '1' },
    );
    const seen = JSON.parse(out) as { path: string; warnings: string[]; repos: string[]; files: string[] };
    expect(seen.path).toBe(join(snapshot, 'prior', 'diffusion_pytorch_model.safetensors'));
    expect(seen.warnings).toEqual([]);
    expect(seen.repos).toEqual(['tiny/wuerstchen-prior']);
    expect(seen.files).toContain('model.safetensors');
  });
});
