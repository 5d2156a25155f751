// `node dist/tests/gpu-check.js [fixtures dir] [--parity-only | --no-parity | --attention-only]
// [--dry-run]`: on a machine with a CUDA device, runs every parity case on cuda against cpu and
// prints a table, then times the flash-attention kernels and LoRA training steps of the
// real-size prior (c 1536, c_cond 1280, depth 32, nhead 24; random weights; batch 8, 24x24
// latents, 77 tokens) on cuda in bf16 mixed precision (TF32 for the remaining fp32 GEMMs), then
// a picture. Exits non-zero when a case fails. scripts/gpu-check.sh runs the parity cases and
// the timing in separate processes, so a kernel fault in one leaves the other.
// --attention-only times the flash-attention kernels alone (builds compared quickly).
// --dry-run does all of it at a tiny size, on the CPU or, with the CUDA emulator's build
// (LORA_TRAIN_NATIVE=build-emulator/Release/lora_train.node), on its emulated device: a check
// of this script before device time. It is compiled with the package's TypeScript (npm run
// build:ts) but not shipped with it.
import { join } from 'node:path';
import { native } from '../src/native/loader.js';
import * as ops from '../src/native/ops.js';
import { type Device, setAllowTf32 } from '../src/native/ops.js';
import { Prior, type PriorConfig } from '../src/models/prior.js';
import { randomStepInputs } from '../bench/inputs.js';
import { Rng } from '../src/core/rng.js';
import type { Tensor } from '../src/core/tensor.js';
import { DEFAULT_DECODER_CONFIG, Decoder, type DecoderConfig } from '../src/models/decoder.js';
import { DEFAULT_VQGAN_CONFIG, VQGAN, type VQGANConfig } from '../src/models/vqgan.js';
import { drawPictures, sampleDecoder } from '../src/sample/decoder-sampler.js';
import { compareWithCpu, parityCases } from './cases/index.js';

async function main() {
  const args = process.argv.slice(2);
  const dry = args.includes('--dry-run');
  const info = native().info();
  if (info.cuda !== true && !dry) {
    console.log(`no usable CUDA device: ${info.cuda}`);
    process.exit(2);
  }
  // A dry run uses CUDA where the addon has it (the CPU emulator's build, tests/cuda-emulator).
  const device: Device = dry && info.cuda !== true ? 'cpu' : 'cuda';
  console.log(
    `lora-train ${info.version} on ${device === 'cpu' ? 'the CPU (dry run)' : `${info.cudaDevice}${dry ? ' (dry run)' : ''}`}`,
  );
  const fixtures = args.find((a) => !a.startsWith('--')) ?? join(process.cwd(), 'tests', 'fixtures');
  if (args.includes('--attention-only')) return void (await attentionTiming(device, dry));
  let failed = 0;
  if (!args.includes('--no-parity')) failed = await parity(fixtures, device);
  if (!args.includes('--parity-only')) {
    await attentionTiming(device, dry);
    await realStep(device, dry);
    await pictureTiming(device, dry);
  }
  process.exit(failed ? 1 : 0);
}

async function parity(fixtures: string, device: Device): Promise<number> {
  let failed = 0;
  console.log('| case | output | relative error | tolerance | ok |\n| --- | --- | --- | --- | --- |');
  // Every case with the default flash kernel (mma.sync), then those reaching flash attention
  // with the WMMA one.
  const flash = (c: { name: string }) =>
    /attention.*_d64 \(bf16|(bf16|fp16) \(c 256, depth 2, head dim 64/.test(c.name);
  const runs = [
    ...parityCases(fixtures).map((c) => ({ c, kernel: 'mma' })),
    ...parityCases(fixtures)
      .filter(flash)
      .map((c) => ({ c: { ...c, name: `${c.name} (WMMA flash)` }, kernel: 'wmma' })),
  ];
  for (const { c, kernel } of runs) {
    process.env.LORA_TRAIN_FLASH = kernel;
    try {
      const results = await compareWithCpu(c, device);
      for (const [i, { output, error, tolerance }] of results.entries()) {
        const ok = error <= tolerance;
        if (!ok) failed++;
        if (!ok || i === 0)
          console.log(`| ${c.name} | ${output} | ${error.toExponential(2)} | ${tolerance} | ${ok ? 'yes' : 'NO'} |`);
      }
    } catch (e) {
      failed++;
      console.log(`| ${c.name} | - | ${(e as Error).message.split('\n')[0]} | - | NO |`);
    }
  }
  delete process.env.LORA_TRAIN_FLASH;
  console.log(`\nparity: ${failed} failing outputs`);
  return failed;
}

// The flash-attention kernels at the real prior's attention shape (24x24 latents attending to
// themselves and 77 mapped text tokens), bf16: kernel time from CUDA events, FLOPs counted as
// FlashAttention does (forward 4 B H N M d; backward 2.5 times that, P recomputed).
async function attentionTiming(device: Device, dry: boolean) {
  if (device !== 'cuda') return;
  const [B, H, N, M, d] = dry ? [1, 2, 96, 130, 64] : [8, 24, 576, 653, 64];
  const random = (rows: number, seed: number) => ({
    data: Float32Array.from({ length: B * rows * H * d }, (_, i) => Math.sin(i * 0.37 + seed)),
    shape: [B, rows, H * d],
  });
  const [q, k, v, dout] = [random(N, 1), random(M, 2), random(M, 3), random(N, 4)];
  const reps = dry ? 1 : 20;
  const flops = 4 * B * H * N * M * d;
  for (const kernel of ['mma', 'wmma']) {
    process.env.LORA_TRAIN_FLASH = kernel;
    const run = async () => {
      const { out, lse } = await ops.attention(q, k, v, H, { device, compute: 'bf16' });
      await ops.attentionBackward(dout, q, k, v, out, lse, H, { device, compute: 'bf16' });
    };
    await run(); // warm-up
    native().cudaProfile(true);
    for (let i = 0; i < reps; i++) await run();
    const profile = native().cudaProfile(false) as { op: string; ms: number; calls: number }[];
    const ms = (op: string) => (profile.find((p) => p.op === op)?.ms ?? NaN) / reps;
    const [forward, backward] = [ms('attention_forward'), ms('attention_backward')];
    console.log(
      JSON.stringify({
        name: 'attention_flash',
        kernel,
        shape: `B${B} H${H} N${N} M${M} d${d} bf16`,
        forward_ms: Number(forward.toFixed(3)),
        forward_tflops: Number((flops / forward / 1e9).toFixed(1)),
        backward_ms: Number(backward.toFixed(3)),
        backward_tflops: Number(((2.5 * flops) / backward / 1e9).toFixed(1)),
      }),
    );
  }
  delete process.env.LORA_TRAIN_FLASH;
}

async function realStep(device: Device, dry: boolean) {
  const config: PriorConfig = dry
    ? { c_in: 16, c: 64, c_cond: 32, c_r: 64, depth: 2, nhead: 1, dropout: 0.1 }
    : { c_in: 16, c: 1536, c_cond: 1280, c_r: 64, depth: 32, nhead: 24, dropout: 0.1 };
  const B = dry ? 2 : 8,
    H = 24,
    W = 24,
    T = 77;
  setAllowTf32(true, { device });
  const setupStart = performance.now();
  const prior = Prior.random(config, { seed: 0, device, precision: 'bf16', lora: { rank: 8, alpha: 8 } });
  console.log(`model set up in ${((performance.now() - setupStart) / 1000).toFixed(1)} s`);
  const { x, r, clip, target } = randomStepInputs(config, B, H, W, T, 1);
  const times: number[] = [];
  for (let step = 1; step <= (dry ? 3 : 12); step++) {
    const t0 = performance.now();
    await prior.step(x, r, clip, target, { seed: step });
    await prior.optimizerStep({ lr: 1e-4, maxNorm: 1 }, step);
    times.push(performance.now() - t0);
  }
  // One more step with every op timed by CUDA events: where the step's time goes.
  if (device === 'cuda')
    await opTable('one step', async () => {
      await prior.step(x, r, clip, target, { seed: 99 });
      await prior.optimizerStep({ lr: 1e-4, maxNorm: 1 }, 13);
    });
  const steady = times.slice(1).sort((a, b) => a - b);
  const ms = steady[Math.floor(steady.length / 2)]!;
  console.log(
    JSON.stringify({
      name: 'prior_lora_step_real',
      shape: `c${config.c} cond${config.c_cond} depth${config.depth} nhead${config.nhead} B${B} ${H}x${W} T${T} r8, bf16 weights and GEMMs (TF32 elsewhere)`,
      device,
      ms_per_step: Number(ms.toFixed(1)),
      samples_per_s: Number(((B * 1000) / ms).toFixed(1)),
      steps_ms: times.map((t) => Number(t.toFixed(1))),
      activation_gb: Number((prior.activationBytes() / 2 ** 30).toFixed(2)),
      parameter_gb: Number((prior.parameterBytes() / 2 ** 30).toFixed(2)),
    }),
  );
}

/** The CUDA-event time of each op in `run`, as a table. */
async function opTable(title: string, run: () => Promise<unknown>) {
  native().cudaProfile(true);
  await run();
  const ops = native().cudaProfile(false) as { op: string; ms: number; calls: number }[];
  const total = ops.reduce((sum, o) => sum + o.ms, 0);
  console.log(`\n| op (${title}, CUDA events) | calls | ms | share |\n| --- | --- | --- | --- |`);
  for (const o of ops)
    console.log(`| ${o.op} | ${o.calls} | ${o.ms.toFixed(2)} | ${((100 * o.ms) / total).toFixed(1)}% |`);
  console.log(`| total | | ${total.toFixed(2)} | |\n`);
}

/** One 1024x1024 picture from the prior's image embeddings: the decoder's 12 steps (bf16 Linear
 * weights and attention, no guidance as the pipeline's default) and the VQGAN (fp32, TF32 GEMMs),
 * random weights at the real configs; bench/peer.py's `picture` times diffusers likewise. */
async function pictureTiming(device: Device, dry: boolean) {
  const decoderConfig: DecoderConfig = dry
    ? {
        ...DEFAULT_DECODER_CONFIG,
        c_cond: 64,
        clip_embd: 32,
        c_hidden: [16, 32, 64, 64],
        blocks: [1, 1, 2, 1],
        nhead: [-1, 1, 1, 1],
      }
    : DEFAULT_DECODER_CONFIG;
  const vqganConfig: VQGANConfig = dry
    ? { ...DEFAULT_VQGAN_CONFIG, embed_dim: 32, bottleneck_blocks: 2 }
    : DEFAULT_VQGAN_CONFIG;
  const side = dry ? 64 : 256,
    T = 77,
    steps = dry ? 2 : 12;
  setAllowTf32(true, { device });
  const decoder = Decoder.random(decoderConfig, { seed: 1, device, precision: 'bf16' });
  const vqgan = VQGAN.random(vqganConfig, { seed: 2, device });
  const rng = new Rng(3);
  const normal = (...shape: number[]): Tensor => ({
    data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.normal()),
    shape,
  });
  const embeddings = normal(1, decoderConfig.effnet_embd, 24, 24),
    cond = normal(1, T, decoderConfig.clip_embd),
    latents = normal(1, decoderConfig.c_in, side, side);
  const noise = normal(1, decoderConfig.c_in, side, side).data;
  const sample = () =>
    sampleDecoder(decoder, { embeddings, cond, latents, guidance: 0, steps, stepNoise: () => noise });
  const timed = async <T>(run: () => Promise<T>) => {
    const t0 = performance.now();
    const value = await run();
    return { ms: performance.now() - t0, value };
  };
  await drawPictures(vqgan, await sample()); // warm-up: plans, cuBLASLt algorithms
  const pictures: number[] = [],
    decoding: number[] = [],
    drawing: number[] = [];
  for (let i = 0; i < (dry ? 1 : 3); i++) {
    const d = await timed(sample);
    const v = await timed(() => drawPictures(vqgan, d.value));
    decoding.push(d.ms);
    drawing.push(v.ms);
    pictures.push(d.ms + v.ms);
  }
  if (device === 'cuda') {
    const r = { data: Float32Array.of(0.5), shape: [1] };
    await opTable('one decoder step', () => decoder.forward(latents, r, embeddings, cond));
    await opTable('one VQGAN decode', () => vqgan.decode(latents));
  }
  const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
  console.log(
    JSON.stringify({
      name: 'picture_real',
      shape: `decoder ${steps} steps B1 ${side}x${side} latents T${T} (bf16 Linear weights and attention), VQGAN decode to ${4 * side}x${4 * side} (fp32, TF32 GEMMs)`,
      device,
      ms_per_picture: Number(median(pictures).toFixed(1)),
      decoder_ms: Number(median(decoding).toFixed(1)),
      vqgan_ms: Number(median(drawing).toFixed(1)),
    }),
  );
}

await main();
