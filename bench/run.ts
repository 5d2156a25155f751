// `npm run bench -- [--json] [--filter <substring>] [--skip <substring>] [--min-seconds <s>]
//   [--rounds <n>] [--help]`
// Times lora-train's ops at the Würstchen prior's shapes and, where a Python with NumPy or
// PyTorch is found, the same operation there in the same run. --json prints one object per
// line: {name, shape, seconds, gflops, peer}; peer.ratio = peer seconds / lora-train seconds
// (above 1: lora-train is faster).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { native } from '../src/native/loader.js';
import * as ops from '../src/native/ops.js';
import { EFFICIENTNET_V2_S, ImageEncoder } from '../src/models/image-encoder.js';
import { Rng } from '../src/core/rng.js';
import { TextEncoder } from '../src/models/text-encoder.js';
import { DEFAULT_DECODER_CONFIG, Decoder } from '../src/models/decoder.js';
import { DEFAULT_VQGAN_CONFIG, VQGAN } from '../src/models/vqgan.js';
import { packageRoot } from '../src/core/package-root.js';
import type { Tensor } from '../src/core/tensor.js';
import type { CpuProfileEntry } from '../src/native/addon.js';
import { summariseProfile, type StepProfile } from './profile.js';

interface PeerSpec {
  kind:
    | 'gemm'
    | 'attention'
    | 'prior_step'
    | 'text_encoder'
    | 'image_encoder'
    | 'decoder_step'
    | 'vqgan_decode'
    | 'allreduce'
    | 'load_prior';
  [param: string]: unknown;
}

interface BenchCase {
  name: string;
  shape: string;
  /** Floating-point operations of one run (algorithmic count; 0: not reported). */
  flops: number;
  /** Items one run processes, for items_per_s (encoders). */
  items?: number;
  setup(): Promise<() => Promise<unknown>>;
  /** Cases that must run in a process of their own (to measure its memory) time themselves. */
  /** lastRound: the case's final round, where a case that profiles itself does so (once). */
  isolated?: (minSeconds: number, lastRound: boolean) => Measured;
  peer?: PeerSpec;
  /** Removes what the case left on disk, once every peer has run. */
  cleanup?: () => void;
  /** The case (name and shape) this one is set beside instead of a peer: bf16 beside fp32. */
  baseline?: { name: string; shape: string };
}

interface Peer {
  impl: string;
  seconds: number;
  peak_rss_mb?: number;
  /** Why the peer has no figure (it ran and failed). */
  failed?: string;
}

/** Figures besides the time that a case measures (memory, for the training step). */
type Extra = Record<string, number>;

/** One profiled run: its wall time and the CPU backend's op totals. */
interface RawProfile {
  wall_ms: number;
  entries: CpuProfileEntry[];
}

interface Measured {
  seconds: number;
  extra: Extra;
  profile?: RawProfile;
}

function randomTensor(shape: number[], seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    data[i] = ((s >>> 0) / 4294967296) * 2 - 1;
  }
  return { data, shape };
}

const GEMM_SHAPES: [number, number, number][] = [
  [2304, 1024, 256],
  [2304, 256, 1024],
  [2304, 1536, 1536],
  [4608, 6144, 1536],
];

const ATTENTION_SHAPES = [
  { B: 4, H: 4, N: 576, M: 653, d: 64 },
  { B: 4, H: 24, N: 576, M: 653, d: 64 },
];

export function benchCases(): BenchCase[] {
  // The training step at the real size first: where the time of a real run goes.
  const cases: BenchCase[] = [...priorStepCases(), loadPriorCase()];
  for (const [M, N, K] of GEMM_SHAPES)
    cases.push({
      name: 'gemm',
      shape: `${M}x${N}x${K}`,
      flops: 2 * M * N * K,
      peer: { kind: 'gemm', M, N, K },
      async setup() {
        const a = randomTensor([M, K], 1),
          b = randomTensor([K, N], 2);
        const out = { data: new Float32Array(M * N), shape: [M, N] };
        return () => ops.matmul(a, b, { out });
      },
    });
  cases.push(...linearCases());
  for (const { B, H, N, M, d } of ATTENTION_SHAPES)
    cases.push({
      name: 'attention_fwd_bwd',
      shape: `B${B} H${H} N${N} M${M} d${d}`,
      // forward 4NMd + backward 8NMd per head (what matmul-softmax-matmul computes)
      flops: 12 * B * H * N * M * d,
      peer: { kind: 'attention', B, H, N, M, d },
      async setup() {
        const C = H * d;
        const q = randomTensor([B, N, C], 3),
          k = randomTensor([B, M, C], 4),
          v = randomTensor([B, M, C], 5),
          dout = randomTensor([B, N, C], 6);
        return async () => {
          const { out, lse } = await ops.attention(q, k, v, H);
          return ops.attentionBackward(dout, q, k, v, out, lse, H);
        };
      },
    });
  // Frozen encoders at small configurations: items (captions, images) per second.
  const text = {
    vocab_size: 49408,
    hidden: 512,
    layers: 6,
    heads: 8,
    intermediate: 2048,
    max_positions: 77,
    eps: 1e-5,
    quick_gelu: false,
  };
  const textBatch = 8;
  cases.push({
    name: 'text_encoder',
    shape: `B${textBatch} T77 hidden${text.hidden} layers${text.layers}`,
    flops: 0,
    items: textBatch,
    peer: { kind: 'text_encoder', B: textBatch, T: 77, ...text },
    async setup() {
      const encoder = TextEncoder.random(text, 1);
      const rng = new Rng(2);
      const ids = Int32Array.from({ length: textBatch * 77 }, () => Math.floor(rng.uniform() * 49000));
      const mask = Uint8Array.from({ length: textBatch * 77 }, (_, i) => (i % 77 < 20 ? 1 : 0));
      return () => encoder.encode({ ids, mask, batch: textBatch, maxLength: 77 });
    },
  });
  const imageBatch = 4,
    side = 256;
  cases.push({
    name: 'image_encoder',
    shape: `efficientnet_v2_s B${imageBatch} ${side}x${side}`,
    flops: 0,
    items: imageBatch,
    peer: { kind: 'image_encoder', B: imageBatch, H: side, W: side },
    async setup() {
      const encoder = ImageEncoder.random(EFFICIENTNET_V2_S, 3);
      const rng = new Rng(4);
      const images = {
        data: Float32Array.from({ length: imageBatch * 3 * side * side }, () => rng.normal()),
        shape: [imageBatch, 3, side, side],
      };
      return () => encoder.encode(images);
    },
  });

  cases.push(...pictureCases());
  if (native().haveGloo) cases.push(allreduceCase());
  return cases;
}

/** The real prior's two big linear layers at batch 1 (576 tokens): the forward x Wᵀ and the
 * backward's dY W, with the weight stored in fp32 and in bf16 (activations fp32, rounded to
 * bf16 as autocast does), the bf16 rows set beside the fp32 ones. */
function linearCases(): BenchCase[] {
  const cases: BenchCase[] = [];
  const shapes = [
    { M: 576, N: 6144, K: 1536, transB: true, what: 'x W^T (fc1 forward)' },
    { M: 576, N: 1536, K: 6144, transB: false, what: 'dY W (fc1 backward)' },
  ];
  for (const { M, N, K, transB, what } of shapes)
    for (const dtype of ['fp32', 'bf16'] as const) {
      const shape = `${M}x${N}x${K} ${what}${dtype === 'bf16' ? ' bf16' : ''}`;
      cases.push({
        name: dtype === 'fp32' ? 'gemm_linear' : 'gemm_linear_bf16',
        shape,
        flops: 2 * M * N * K,
        baseline: dtype === 'bf16' ? { name: 'gemm_linear', shape: shape.replace(/ bf16$/, '') } : undefined,
        async setup() {
          const a = randomTensor([M, K], 1);
          const w = randomTensor(transB ? [N, K] : [K, N], 2);
          const b = dtype === 'bf16' ? await ops.toLowp(w, 'bf16') : w;
          const out = { data: new Float32Array(M * N), shape: [M, N] };
          return () => ops.matmul(a, b, { out, transB });
        },
      });
    }
  return cases;
}

interface PriorStep {
  config: { c_in: number; c: number; c_cond: number; c_r: number; depth: number; nhead: number; dropout: number };
  B: number;
  H: number;
  W: number;
  T: number;
  rank: number;
}

/** The real prior (warp-ai/wuerstchen-prior: c 1536, c_cond 1280, depth 32, 24 heads) at
 * batch 1 and 4, then a small one (c 256, depth 4, batch 4); 24x24 latents, 77 text tokens,
 * rank 8 on to_q/to_k/to_v/to_out.0. fp32 beside PyTorch (diffusers + peft where installed);
 * bf16 mixed precision beside lora-train's own fp32 figure. */
function priorStepCases(): BenchCase[] {
  const real = { c_in: 16, c: 1536, c_cond: 1280, c_r: 64, depth: 32, nhead: 24, dropout: 0.1 };
  const small = { c_in: 16, c: 256, c_cond: 256, c_r: 64, depth: 4, nhead: 4, dropout: 0.1 };
  const at = (config: PriorStep['config'], B: number): PriorStep => ({ config, B, H: 24, W: 24, T: 77, rank: 8 });
  return [
    priorStepCase('prior_lora_step_real', 'c1536 cond1280 depth32 nhead24 B1 24x24 T77 r8', at(real, 1), 'fp32', true),
    priorStepCase('prior_lora_step_real', 'c1536 cond1280 depth32 nhead24 B4 24x24 T77 r8', at(real, 4), 'fp32'),
    priorStepCase(
      'prior_lora_step_real_bf16',
      'c1536 cond1280 depth32 nhead24 B1 24x24 T77 r8 bf16',
      at(real, 1),
      'bf16',
    ),
    priorStepCase('prior_lora_step', 'c256 cond256 depth4 nhead4 B4 24x24 T77 r8', at(small, 4), 'fp32', true),
    priorStepCase('prior_lora_step_bf16', 'c256 cond256 depth4 nhead4 B4 24x24 T77 r8 bf16', at(small, 4), 'bf16'),
  ];
}

/** One LoRA training step (forward, MSE, backward, clip, AdamW), in a process of its own. */
function priorStepCase(
  name: string,
  shape: string,
  step: PriorStep,
  precision: 'fp32' | 'bf16',
  profile = false,
): BenchCase {
  const { config, B, H, W, T, rank } = step;
  return {
    name,
    shape,
    flops: 0,
    // PyTorch's CPU autocast is not what users train with: bf16 is set beside the fp32 row.
    peer: precision === 'fp32' ? { kind: 'prior_step', ...config, B, H, W, T, rank } : undefined,
    baseline:
      precision === 'fp32' ? undefined : { name: name.replace(/_bf16$/, ''), shape: shape.replace(/ bf16$/, '') },
    async setup() {
      throw new Error(`${name} runs isolated`);
    },
    isolated(minSeconds, lastRound) {
      const script = join(packageRoot, 'dist', 'bench', 'prior-step.js');
      const spec = { ...step, precision, minSeconds, profile: profile && lastRound };
      const r = spawnSync(process.execPath, [script, JSON.stringify(spec)], {
        encoding: 'utf8',
        maxBuffer: 1 << 24,
      });
      if (r.status !== 0) throw new Error(`prior-step failed: ${r.stderr}`);
      const last = JSON.parse(r.stdout.trim().split('\n').pop()!) as Extra & { seconds: number; profile?: RawProfile };
      const { seconds, profile: raw, ...extra } = last;
      return { seconds, extra, ...(raw ? { profile: raw } : {}) };
    },
  };
}

/** Loading the real prior (4 GB of fp32 safetensors) from a warm page cache, beside diffusers'
 * from_pretrained of the same snapshot. The snapshot is written to a temporary folder first. */
function loadPriorCase(): BenchCase {
  const script = join(packageRoot, 'dist', 'bench', 'load-prior.js');
  const dir = mkdtempSync(join(tmpdir(), 'lora-train-bench-prior-'));
  let written = false;
  const once = (spec: object) => {
    const r = spawnSync(process.execPath, [script, JSON.stringify({ dir, ...spec })], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`load-prior failed: ${r.stderr}`);
    return r.stdout;
  };
  return {
    name: 'load_prior_real',
    shape: 'c1536 cond1280 depth32 nhead24 fp32 safetensors, warm page cache',
    flops: 0,
    peer: { kind: 'load_prior', dir: join(dir, 'prior') },
    async setup() {
      throw new Error('load_prior_real runs isolated');
    },
    isolated(minSeconds) {
      if (!written) once({ write: true });
      written = true;
      once({}); // warms the page cache
      const times: number[] = [];
      const start = performance.now();
      while (times.length < 3 || (performance.now() - start) / 1000 < minSeconds)
        times.push((JSON.parse(once({}).trim().split('\n').pop()!) as { seconds: number }).seconds);
      times.sort((a, b) => a - b);
      return { seconds: times[Math.floor(times.length / 2)]!, extra: {} };
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** One decoder (Stage B) step and one VQGAN decode at the real sizes of a 1024 px picture
 * (24x24 image embeddings -> 256x256 latents -> 1024x1024 pixels), batch 1, random weights at
 * diffusers' default configs (warp-ai/wuerstchen's), beside diffusers' own models. */
function pictureCases(): BenchCase[] {
  const random = (shape: number[], seed: number) => {
    const rng = new Rng(seed);
    return { data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()), shape };
  };
  const side = 256,
    T = 77;
  const decoderConfig = DEFAULT_DECODER_CONFIG,
    vqganConfig = DEFAULT_VQGAN_CONFIG;
  return [
    {
      name: 'decoder_step_real',
      shape: `WuerstchenDiffNeXt (default config) B1 ${side}x${side} latents, effnet 24x24, T${T}; as a sampler calls it (lora-train keeps the text and effnet mappings between steps)`,
      flops: 0,
      peer: { kind: 'decoder_step', side, T },
      async setup() {
        const decoder = Decoder.random(decoderConfig, { seed: 5 });
        const x = random([1, 4, side, side], 6),
          effnet = random([1, 16, 24, 24], 7),
          clip = random([1, T, decoderConfig.clip_embd], 8);
        const r = { data: Float32Array.of(0.5), shape: [1] };
        return () => decoder.forward(x, r, effnet, clip);
      },
    },
    {
      name: 'vqgan_decode_real',
      shape: `PaellaVQModel (default config) decode B1 ${side}x${side} latents -> ${4 * side}x${4 * side}`,
      flops: 0,
      peer: { kind: 'vqgan_decode', side },
      async setup() {
        const vqgan = VQGAN.random(vqganConfig, { seed: 9 });
        const latents = random([1, 4, side, side], 10);
        return () => vqgan.decode(latents);
      },
    },
  ];
}

/** The real prior's LoRA gradients: 32 blocks × to_q, to_k, to_v, to_out.0 (1536 → 1536), r 8. */
const REAL_LORA_FLOATS = 32 * 4 * (8 * 1536 + 1536 * 8);

/** One optimizer step's gradient allreduce over Gloo between 2 processes on loopback. */
function allreduceCase(): BenchCase {
  const world = 2;
  return {
    name: 'allreduce_gloo',
    shape: `${world} processes, ${REAL_LORA_FLOATS} floats (real prior LoRA, r 8, 4 targets x 32 blocks)`,
    flops: 0,
    peer: { kind: 'allreduce', n: REAL_LORA_FLOATS, world },
    async setup() {
      throw new Error('allreduce_gloo runs isolated');
    },
    isolated(minSeconds) {
      const script = join(packageRoot, 'dist', 'bench', 'allreduce.js');
      const r = spawnSync(process.execPath, [script, JSON.stringify({ n: REAL_LORA_FLOATS, minSeconds, world })], {
        encoding: 'utf8',
      });
      if (r.status !== 0) throw new Error(`allreduce failed: ${r.stderr}`);
      const { seconds } = JSON.parse(r.stdout.trim().split('\n').pop()!) as { seconds: number };
      return { seconds, extra: { megabytes: (REAL_LORA_FLOATS * 4) / 1e6 } };
    },
  };
}

async function time(run: () => Promise<unknown>, minSeconds: number): Promise<number> {
  await run(); // warm-up: first-touch allocations, packing buffers
  const times: number[] = [];
  const start = performance.now();
  while (times.length < 3 || (performance.now() - start) / 1000 < minSeconds) {
    const t = performance.now();
    await run();
    times.push((performance.now() - t) / 1000);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

/** Finds a Python with numpy or torch: LORA_TRAIN_PEER_PYTHON, then python3, then /usr/bin/python3. */
function findPeerPython(): string | undefined {
  const candidates = [process.env.LORA_TRAIN_PEER_PYTHON, 'python3', '/usr/bin/python3', 'python'].filter(
    (c): c is string => !!c,
  );
  let fallback: string | undefined;
  for (const py of candidates) {
    const r = spawnSync(
      py,
      [
        '-c',
        'import importlib.util as u; print(int(bool(u.find_spec("numpy"))) + 2 * int(bool(u.find_spec("torch"))))',
      ],
      { encoding: 'utf8' },
    );
    const found = Number(r.stdout?.trim());
    if (r.status !== 0 || !found) continue;
    if (found === 3) return py; // both: the GEMM peer uses NumPy, attention uses PyTorch
    fallback ??= py;
  }
  return fallback;
}

function peerEnv(): NodeJS.ProcessEnv {
  // Pins of OpenBLAS's core type slow a current NumPy; the peer runs without them (tests don't).
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  return env;
}

/** Times one case in the peer, in a Python process of its own so that its peak RSS is its own. */
function runPeer(python: string, spec: PeerSpec, minSeconds: number): Peer {
  const r = spawnSync(python, [join(packageRoot, 'bench', 'peer.py')], {
    input: JSON.stringify([{ id: '0', minSeconds, ...spec }]),
    encoding: 'utf8',
    env: peerEnv(),
    maxBuffer: 1 << 24,
  });
  if (r.status !== 0) {
    const why = r.signal
      ? `killed by ${r.signal}${r.signal === 'SIGKILL' ? ' (out of memory?)' : ''}`
      : r.stderr.trim().split('\n').pop();
    console.error(`bench: peer (${python}) failed on ${spec.kind}: ${why}`);
    return { impl: python, seconds: NaN, failed: why };
  }
  const line = r.stdout.split('\n').find((l) => l.trim())!;
  const { id: _, ...peer } = JSON.parse(line) as Peer & { id: string };
  return peer;
}

const faster = <T extends { seconds: number; failed?: string }>(a: T | undefined, b: T): T =>
  !a || (a.failed && !b.failed) || (!b.failed && b.seconds < a.seconds) ? b : a;

/** One timing of a case: isolated in a process of its own, or in this one. */
async function measureOnce(c: BenchCase, minSeconds: number, lastRound: boolean): Promise<Measured> {
  if (c.isolated) return c.isolated(minSeconds, lastRound);
  return { seconds: await time(await c.setup(), minSeconds), extra: {} };
}

/** Times the case, then its peer, `rounds` times in turn, keeping each side's fastest: on a
 * machine whose speed drifts, both sides then see the same spells of it. A bf16 case takes
 * turns with its fp32 baseline the same way, for its vs_fp32. */
async function measureCase(
  c: BenchCase,
  baseline: BenchCase | undefined,
  python: string | undefined,
  minSeconds: number,
  rounds: number,
) {
  let ours: Measured | undefined;
  let peer: Peer | undefined;
  let base: Measured | undefined;
  let profile: RawProfile | undefined;
  for (let i = 0; i < rounds; i++) {
    const m = await measureOnce(c, minSeconds, i === rounds - 1);
    profile ??= m.profile;
    ours = faster(ours, m);
    if (c.peer && python) peer = faster(peer, runPeer(python, c.peer, minSeconds));
    if (baseline) base = faster(base, await measureOnce(baseline, minSeconds, false));
  }
  c.cleanup?.();
  return { c, ...ours!, profile, peer, baselineSeconds: base?.seconds };
}

const PROBE = '2304x1536x1536';

/** GFLOP/s of one fp32 GEMM at the prior's shapes, best of a few: run before and after the
 * cases, it shows whether other work shared the machine meanwhile (a busy VM host lowers it). */
async function gemmProbe(): Promise<number> {
  const [M, N, K] = PROBE.split('x').map(Number) as [number, number, number];
  const a = new Float32Array(M * K).fill(0.5),
    b = new Float32Array(K * N).fill(0.25),
    c = new Float32Array(M * N);
  let best = Infinity;
  for (let i = 0; i < 6; i++) {
    const t = performance.now();
    await native().gemm('cpu', c, a, b, M, N, K, false, true, 1, 0, 'f32', 'f32');
    best = Math.min(best, (performance.now() - t) / 1000);
  }
  return Number(((2 * M * N * K) / best / 1e9).toFixed(1));
}

/** The kernel set a bf16 row ran on: its GEMMs go to AMX tiles or AVX512_BF16 dot products
 * when the CPU has them. */
function bf16Kernels(m: ReturnType<typeof machine>): string {
  if (m.amx) return `${m.kernels}+amx`;
  return m.avx512bf16 ? `${m.kernels}+avx512_bf16` : m.kernels;
}

function machine() {
  const info = native().info();
  const clockGHz = native().measureClockGHz(0.3);
  // fp32 FMA lanes per core per cycle: vector width x FMA pipes. Zen 2-4 have two 256-bit FMA
  // pipes (Zen 4 splits AVX-512 over them); Zen 5 and Intel AVX-512 server cores have two
  // 512-bit ones; AVX2 cores two 256-bit ones.
  const { vendor, family } = info.cpu;
  let lanes = 8;
  if (info.cpu.availableKernels.includes('avx512')) lanes = vendor === 'AuthenticAMD' && family < 0x1a ? 16 : 32;
  else if (info.cpu.availableKernels.includes('avx2')) lanes = 16;
  const cores = availableParallelism();
  return {
    name: 'machine',
    cpu: info.cpu.brand,
    cores,
    threads: info.cpu.threads,
    kernels: info.cpu.kernels,
    amx: info.cpu.amx && info.cpu.kernels === 'avx512',
    avx512bf16: info.cpu.avx512bf16 && info.cpu.kernels === 'avx512',
    clock_ghz: Number(clockGHz.toFixed(3)),
    clock_source: 'measured (dependent-add chain)',
    fma_lanes: lanes,
    peak_gflops: Number((cores * lanes * 2 * clockGHz).toFixed(1)),
  };
}

/** Every option the bench takes: the parser's check and --help both read it. */
const OPTIONS: { flag: string; value?: string; help: string }[] = [
  { flag: '--json', help: 'one JSON object per line: the machine, then each case' },
  { flag: '--help', help: 'this text' },
  { flag: '--filter', value: '<text>', help: 'only the cases whose name and shape contain <text>' },
  { flag: '--skip', value: '<text>', help: 'leave out the cases whose name and shape contain <text>' },
  { flag: '--min-seconds', value: '<s>', help: 'time each side for at least <s> seconds (default 1)' },
  {
    flag: '--rounds',
    value: '<n>',
    help: "time each case and its peer in turn <n> times, keeping each side's fastest",
  },
];
const USAGE = [
  'Usage: npm run bench -- [options]',
  '',
  'Times lora-train beside its peer (PyTorch, diffusers, NumPy) in the same run, case by case.',
  '',
  ...OPTIONS.map((o) => `  ${`${o.flag}${o.value ? ` ${o.value}` : ''}`.padEnd(20)}${o.help}`),
].join('\n');

/** Refuses what the bench does not know, rather than starting an hour-long run without it. */
function checkArguments(argv: string[]) {
  for (let i = 0; i < argv.length; i++) {
    const option = OPTIONS.find((o) => o.flag === argv[i]);
    if (!option) throw new Error(`Expected one of ${OPTIONS.map((o) => o.flag).join(', ')} but received ${argv[i]}`);
    if (!option.value) continue;
    if (argv[i + 1] === undefined) throw new Error(`Expected a value after ${option.flag} but received nothing`);
    i++;
  }
}

async function main(argv: string[]) {
  checkArguments(argv);
  if (argv.includes('--help')) return void console.log(USAGE);
  const json = argv.includes('--json');
  const arg = (flag: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const filter = arg('--filter');
  const skip = arg('--skip');
  const minSeconds = Number(arg('--min-seconds') ?? 1);
  const rounds = Number(arg('--rounds') ?? 1);
  if (!Number.isInteger(rounds) || rounds < 1)
    throw new Error(`Expected a whole number of at least 1 for --rounds but received ${arg('--rounds')}`);
  const all = benchCases();
  const cases = all.filter((c) => {
    const label = `${c.name} ${c.shape}`;
    return (!filter || label.includes(filter)) && (!skip || !label.includes(skip));
  });

  const probeBefore = await gemmProbe();
  const python = findPeerPython();
  const ours: Awaited<ReturnType<typeof measureCase>>[] = [];
  const find = (ref: BenchCase['baseline']) => ref && all.find((o) => o.name === ref.name && o.shape === ref.shape);
  for (const c of cases) ours.push(await measureCase(c, find(c.baseline), python, minSeconds, rounds));
  const m = { ...machine(), gemm_probe_gflops: [probeBefore, await gemmProbe()] };
  if (json) console.log(JSON.stringify(m));
  else
    console.log(
      `machine: ${m.cpu}, ${m.cores} cores at ${m.clock_ghz} GHz (measured), ${m.fma_lanes} fp32 FMA lanes, estimated fp32 peak ${m.peak_gflops} GFLOP/s; kernels ${m.kernels}; ${PROBE} GEMM before and after the cases: ${m.gemm_probe_gflops.join(' and ')} GFLOP/s`,
    );

  const round = (extra: Extra) => Object.fromEntries(Object.entries(extra).map(([k, v]) => [k, Number(v.toFixed(1))]));
  for (const { c, seconds, extra, profile, peer, baselineSeconds } of ours) {
    const gflops = (s: number) => (c.flops ? Number((c.flops / s / 1e9).toFixed(1)) : null);
    const row = {
      name: c.name,
      shape: c.shape,
      kernels: c.name.endsWith('_bf16') ? bf16Kernels(m) : m.kernels,
      seconds: Number(seconds.toPrecision(4)),
      ...(baselineSeconds ? { vs_fp32: Number((baselineSeconds / seconds).toFixed(3)) } : {}),
      gflops: gflops(seconds),
      ...(c.items ? { items_per_s: Number((c.items / seconds).toFixed(2)) } : {}),
      ...round(extra),
      ...(peer?.failed ? { peer_failed: peer.failed } : {}),
      peer:
        peer && !peer.failed
          ? {
              impl: peer.impl,
              seconds: Number(peer.seconds.toPrecision(4)),
              gflops: gflops(peer.seconds),
              ...(c.items ? { items_per_s: Number((c.items / peer.seconds).toFixed(2)) } : {}),
              ratio: Number((peer.seconds / seconds).toFixed(3)),
              ...round(peer.peak_rss_mb === undefined ? {} : { peak_rss_mb: peer.peak_rss_mb }),
            }
          : null,
    };
    if (json) console.log(JSON.stringify(row));
    else {
      const field = (o: object, key: string) => (o as Record<string, number | undefined>)[key];
      const mem = (o: object) =>
        field(o, 'peak_rss_mb') === undefined ? '' : `, peak RSS ${field(o, 'peak_rss_mb')} MB`;
      const rate = (g: number | null) => (g === null ? '' : `, ${g} GFLOP/s`);
      const items = (o: object) =>
        field(o, 'items_per_s') === undefined ? '' : `, ${field(o, 'items_per_s')} items/s`;
      const p = row.peer
        ? `   peer ${row.peer.impl}: ${(row.peer.seconds * 1e3).toFixed(2)} ms${rate(row.peer.gflops)}${items(row.peer)}${mem(row.peer)}; lora-train ${row.peer.ratio}x faster`
        : '   peer: none (no Python with numpy or torch found)';
      console.log(
        `${row.name.padEnd(18)} ${row.shape.padEnd(42)} ${(row.seconds * 1e3).toFixed(2).padStart(9)} ms${rate(row.gflops)}${items(row)}${mem(row)}\n${p}`,
      );
    }
    if (profile) printProfile(json, c, row.kernels, summariseProfile(profile.entries, profile.wall_ms, m.peak_gflops));
  }
}

/** A `<name>_profile` line after the case's own: where one step's time goes, per kind of op and
 * per op shape, each with its rate against the machine's peak. */
function printProfile(json: boolean, c: BenchCase, kernels: string, p: StepProfile) {
  if (json) {
    console.log(JSON.stringify({ name: `${c.name}_profile`, shape: c.shape, kernels, ...p }));
    return;
  }
  const rate = (l: StepProfile['ops'][number]) =>
    l.gflops === null ? '' : `  ${l.gflops} GFLOP/s (${(l.of_peak! * 100).toFixed(0)}% of peak)`;
  console.log(`   profile of one step (${p.wall_ms} ms):`);
  for (const l of [...p.categories, ...p.ops])
    console.log(
      `     ${l.part.padEnd(46)} ${l.ms.toFixed(1).padStart(9)} ms ${(l.share * 100).toFixed(1).padStart(5)}%${rate(l)}`,
    );
}

await main(process.argv.slice(2));
