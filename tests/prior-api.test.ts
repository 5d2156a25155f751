// The prior's loader, LoRA handling and files: everything the fixtures from diffusers do not
// cover by themselves. Expected values come from the fixtures or from first principles.
import { cpSync, mkdtempSync, readFileSync, renameSync, truncateSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type Prior, loadPrior } from '../src/models/prior.js';
import { getTensor, readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import type { Tensor } from '../src/core/tensor.js';
import { TOLERANCE, relativeError } from './cases/index.js';
import { expectClose, fixturesDir } from './helpers.js';

const base = join(fixturesDir, 'prior', 'f32_nonsquare'); // dropout 0.1, LoRA rank 4 alpha 8
const sharded = join(fixturesDir, 'prior', 'bf16_sharded_all_targets');
const ref = readSafetensors(join(base, 'reference.safetensors'));
const t = (k: string) => getTensor(ref, k);
const inputs = () => [t('x'), t('r'), t('clip')] as const;

function copyOf(dir: string): string {
  const out = mkdtempSync(join(tmpdir(), 'lora-train-prior-'));
  cpSync(dir, out, { recursive: true });
  return out;
}

function rewriteWeights(dir: string, edit: (tensors: Record<string, Tensor>) => void) {
  const file = join(dir, 'diffusion_pytorch_model.safetensors');
  const st = readSafetensors(file);
  const tensors: Record<string, Tensor> = {};
  for (const name of st.entries.keys()) tensors[name] = getTensor(st, name);
  edit(tensors);
  writeSafetensors(file, tensors);
}

/** Every adapter matrix set to 0.05 wave(i * frequency): small, non-zero, and not symmetric. */
function setWaveWeights(prior: Prior, wave: (x: number) => number, frequency: number) {
  const weights: Record<string, Tensor> = {};
  for (const [k, w] of Object.entries(prior.loraWeights()))
    weights[k] = { data: w.data.map((_, i) => wave(i * frequency) * 0.05), shape: w.shape };
  prior.setLoraWeights(weights);
}

/** The fixture's step inputs (x, r, clip, target), or only their first batch item. */
function stepInputs(firstItemOnly = false): [Tensor, Tensor, Tensor, Tensor] {
  const all = [...inputs(), t('target')];
  const first = (k: Tensor) => ({
    data: k.data.slice(0, k.data.length / k.shape[0]!),
    shape: [1, ...k.shape.slice(1)],
  });
  return (firstItemOnly ? all.map(first) : all) as [Tensor, Tensor, Tensor, Tensor];
}

/** Central differences of the training loss along a fixed direction of each named LoRA tensor
 * against its analytic gradient (dropout masks fixed by the step's seed). */
async function expectFiniteDifferences(
  prior: Prior,
  names: string[],
  seed: number,
  wave: number,
  firstItemOnly = false,
) {
  const [x, r, clip, target] = stepInputs(firstItemOnly);
  const step = { seed, train: true };
  const { grads } = await prior.lossAndGrad(x, r, clip, target, step);
  const weights = prior.loraWeights();
  for (const name of names) {
    const w = weights[name]!;
    const v = Float32Array.from(w.data, (_, i) => Math.sin(i * wave) * 0.5);
    const h = 1e-2;
    const at = async (sign: number) => {
      prior.setLoraWeights({ [name]: { data: w.data.map((x0, i) => x0 + sign * h * v[i]!), shape: w.shape } });
      const loss = (await prior.lossAndGrad(x, r, clip, target, step)).loss;
      prior.setLoraWeights({ [name]: w });
      return loss;
    };
    const numeric = ((await at(1)) - (await at(-1))) / (2 * h);
    const analytic = grads[`prior.${name}`]!.data.reduce((acc, g, i) => acc + g * v[i]!, 0);
    expect(Math.abs(numeric - analytic), `${name}: numeric ${numeric} analytic ${analytic}`).toBeLessThanOrEqual(
      2e-3 * Math.max(1e-2, Math.abs(analytic)) + 1e-6,
    );
  }
}

describe('loading a prior', () => {
  it('accepts a snapshot folder with prior/ inside', async () => {
    const snapshot = mkdtempSync(join(tmpdir(), 'lora-train-snapshot-'));
    cpSync(base, join(snapshot, 'prior'), { recursive: true });
    const prior = await loadPrior(snapshot);
    expectClose('out', await prior.forward(...inputs()), t('out'), TOLERANCE.forward);
  });

  it('keeps mapped weights when the file is replaced or deleted, and reads tensors at unaligned offsets', async () => {
    const dir = copyOf(base);
    const file = join(dir, 'diffusion_pytorch_model.safetensors');
    const prior = await loadPrior(dir);
    if (process.platform === 'linux') expect(readFileSync('/proc/self/maps', 'utf8')).toContain(file);
    // Replaced by a rename, as the Hub cache does, then deleted: the open mapping still holds
    // the old inode's pages.
    const zeros = join(dir, 'zeros.safetensors');
    const st = readSafetensors(file);
    const tensors: Record<string, Tensor> = {};
    for (const name of st.entries.keys()) {
      const { shape } = getTensor(st, name);
      tensors[name] = { data: new Float32Array(shape.reduce((a, b) => a * b, 1)), shape };
    }
    writeSafetensors(zeros, tensors);
    renameSync(zeros, file);
    expectClose('out after replace', await prior.forward(...inputs()), t('out'), TOLERANCE.forward);
    unlinkSync(file);
    expectClose('out after delete', await prior.forward(...inputs()), t('out'), TOLERANCE.forward);

    // A header two bytes longer (JSON allows trailing spaces) leaves every F32 tensor off its
    // 4-byte alignment: those are copied instead of mapped.
    const bytes = readFileSync(join(base, 'diffusion_pytorch_model.safetensors'));
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const shifted = Buffer.concat([
      Buffer.alloc(8),
      bytes.subarray(8, 8 + headerLength),
      Buffer.from('  '),
      bytes.subarray(8 + headerLength),
    ]);
    shifted.writeBigUInt64LE(BigInt(headerLength + 2), 0);
    writeFileSync(file, shifted);
    expectClose(
      'out from unaligned tensors',
      await (await loadPrior(dir)).forward(...inputs()),
      t('out'),
      TOLERANCE.forward,
    );
  });

  it('lists missing, unexpected and wrongly shaped tensors with both shapes', async () => {
    const dir = copyOf(base);
    rewriteWeights(dir, (w) => {
      delete w['blocks.0.depthwise.bias'];
      w['blocks.9.extra.weight'] = { data: new Float32Array(2), shape: [2] };
      w['blocks.2.attention.to_q.weight'] = { data: new Float32Array(32 * 31), shape: [32, 31] };
    });
    const error = await loadPrior(dir).catch((e: Error) => e);
    expect(error).toBeInstanceOf(Error);
    const message = (error as Error).message;
    expect(message).toContain('the weights do not fit config.json');
    expect(message).toContain('missing tensor blocks.0.depthwise.bias [32]');
    expect(message).toContain('unexpected tensor blocks.9.extra.weight [2] in diffusion_pytorch_model.safetensors');
    expect(message).toContain(
      'tensor blocks.2.attention.to_q.weight has shape [32, 31] in diffusion_pytorch_model.safetensors, the config needs [32, 32]',
    );
  });

  it('refuses a truncated weights file and a shard index naming a missing shard', async () => {
    const dir = copyOf(base);
    const file = join(dir, 'diffusion_pytorch_model.safetensors');
    truncateSync(file, readFileSync(file).length - 100);
    await expect(loadPrior(dir)).rejects.toThrow(
      /not a valid safetensors file: .*outside the \d+-byte data section \(truncated\?\)/,
    );
    const shardDir = copyOf(sharded);
    writeFileSync(join(shardDir, 'diffusion_pytorch_model-00003-of-00009.safetensors'), '');
    await expect(loadPrior(shardDir)).rejects.toThrow(/shorter than the 8-byte header length/);
  });

  it('refuses configs that do not describe a WuerstchenPrior', async () => {
    const dir = copyOf(base);
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as object;
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, _class_name: 'UNet2DConditionModel' }));
    await expect(loadPrior(dir)).rejects.toThrow('_class_name is "UNet2DConditionModel", expected "WuerstchenPrior"');
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, nhead: 3 }));
    await expect(loadPrior(dir)).rejects.toThrow('c (32) is not divisible by nhead (3)');
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, depth: 1.5 }));
    await expect(loadPrior(dir)).rejects.toThrow('depth must be a positive integer <= 65536, got 1.5');
    await expect(loadPrior(join(dir, 'nope'))).rejects.toThrow(/no prior here/);
  });

  it('checks input shapes against the config', async () => {
    const prior = await loadPrior(base);
    const [x, r, clip] = inputs();
    await expect(prior.forward(x, { data: new Float32Array(3), shape: [3] }, clip)).rejects.toThrow(
      'forward: Expected shape [2] for r but received [3]',
    );
    await expect(prior.forward(x, r, { data: new Float32Array(2 * 7 * 5), shape: [2, 7, 5] })).rejects.toThrow(
      'forward: Expected shape [2, 7, 24] for clip but received [2, 7, 5]',
    );
  });
});

describe('dropout', () => {
  it('is active only in training, and a seed fixes its masks', async () => {
    const prior = await loadPrior(base); // dropout 0.1
    const evalOut = await prior.forward(...inputs());
    expectClose('eval twice', await prior.forward(...inputs()), evalOut, 0);
    const a = await prior.forward(...inputs(), { train: true, seed: 1 });
    const b = await prior.forward(...inputs(), { train: true, seed: 1 });
    const c = await prior.forward(...inputs(), { train: true, seed: 2 });
    expect(relativeError(a.data, b.data)).toBe(0);
    expect(relativeError(a.data, evalOut.data)).toBeGreaterThan(1e-3);
    expect(relativeError(a.data, c.data)).toBeGreaterThan(1e-3);
  });

  it('does nothing when the config says 0', async () => {
    const dir = join(fixturesDir, 'prior', 'f16_odd_cr'); // dropout 0.0
    const r = readSafetensors(join(dir, 'reference.safetensors'));
    const prior = await loadPrior(dir);
    const args = [getTensor(r, 'x'), getTensor(r, 'r'), getTensor(r, 'clip')] as const;
    expectClose(
      'train == eval',
      await prior.forward(...args, { train: true, seed: 5 }),
      await prior.forward(...args),
      0,
    );
  });
});

describe('LoRA adapters', () => {
  it('start as peft does: lora_A kaiming-uniform from the seed, lora_B zero, output unchanged', async () => {
    const prior = await loadPrior(base, { lora: { rank: 4, alpha: 8, seed: 7 } });
    expectClose('fresh LoRA leaves the output', await prior.forward(...inputs()), t('out'), TOLERANCE.forward);
    const w = prior.loraWeights();
    expect(Object.keys(w)).toHaveLength(2 * 4 * 2); // 4 targets x 2 blocks x (A, B)
    const a = w['blocks.2.attention.to_q.lora_A.weight']!;
    expect(a.shape).toEqual([4, 32]);
    const bound = 1 / Math.sqrt(32);
    expect(Math.max(...a.data.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...a.data.map(Math.abs))).toBeGreaterThan(bound * 0.8);
    expect(w['blocks.2.attention.to_q.lora_B.weight']!.data.every((v) => v === 0)).toBe(true);
    const same = (await loadPrior(base, { lora: { rank: 4, seed: 7 } })).loraWeights();
    const other = (await loadPrior(base, { lora: { rank: 4, seed: 8 } })).loraWeights();
    expect(same['blocks.2.attention.to_q.lora_A.weight']!.data).toEqual(a.data);
    expect(other['blocks.2.attention.to_q.lora_A.weight']!.data).not.toEqual(a.data);
  });

  it('refuses targets that match nothing or cannot be adapted', async () => {
    const prior = await loadPrior(base);
    expect(() => prior.addLora({ targets: ['to_qq'] })).toThrow(
      "LoRA target 'to_qq' matches no Linear layer of the prior",
    );
    expect(() => prior.addLora({ targets: ['cond_mapper.0'] })).toThrow(
      /matches cond_mapper.0, which lora-train cannot adapt/,
    );
  });

  it('plans activation memory once per batch shape', async () => {
    const prior = await loadPrior(base, { lora: { rank: 4 } });
    const [x, r, clip] = inputs();
    await prior.step(x, r, clip, t('target'), { seed: 1 });
    const planned = prior.activationBytes();
    expect(planned).toBeGreaterThan(0);
    await prior.step(x, r, clip, t('target'), { seed: 2 });
    expect(prior.activationBytes()).toBe(planned);
    const one = (k: Tensor, n: number) => ({
      data: k.data.slice(0, k.data.length / 2),
      shape: [n, ...k.shape.slice(1)],
    });
    await prior.step(one(x, 1), one(r, 1), one(clip, 1), one(t('target'), 1));
    expect(prior.activationBytes()).toBeLessThan(planned);
  });

  it('finite differences agree with the LoRA gradients, dropout and LoRA dropout on', async () => {
    const prior = await loadPrior(base, { lora: { rank: 4, alpha: 8, dropout: 0.2, seed: 3 } });
    const peft = readSafetensors(join(base, 'lora_peft', 'adapter_model.safetensors'));
    const weights: Record<string, Tensor> = {};
    for (const k of peft.entries.keys()) weights[k.replace('base_model.model.', '')] = getTensor(peft, k);
    prior.setLoraWeights(weights);
    await expectFiniteDifferences(
      prior,
      [
        'blocks.2.attention.to_q.lora_A.weight',
        'blocks.5.attention.to_out.0.lora_B.weight',
        'blocks.5.attention.to_v.lora_A.weight',
      ],
      11,
      12.9898,
    );
  });

  it('finite differences agree for adapters on the timestep mapper and the ResBlock linears', async () => {
    // The mapper's gradient reads the TimestepBlock's input, which the backward keeps only
    // when that mapper has an adapter.
    const prior = await loadPrior(base, {
      lora: { rank: 2, alpha: 2, targets: ['mapper', 'channelwise.0', 'channelwise.4'], seed: 5 },
    });
    setWaveWeights(prior, Math.cos, 0.37);
    await expectFiniteDifferences(
      prior,
      [
        'blocks.1.mapper.lora_A.weight',
        'blocks.4.mapper.lora_B.weight',
        'blocks.3.channelwise.0.lora_B.weight',
        'blocks.0.channelwise.4.lora_A.weight',
      ],
      4,
      7.31,
    );
  });
  it('finite differences agree where the backward stops at the lowest adapter', async () => {
    // Below the lowest adapter nothing trains, so the backward skips the frozen layers' input
    // gradients there: after a ResBlock whose only adapter is channelwise.4, after an AttnBlock
    // whose text keys still feed an adapter on kv_mapper, and after a TimestepBlock.
    const cases: [string[], string[]][] = [
      [
        ['blocks.3.channelwise.4', 'blocks.5.attention.to_q'],
        ['blocks.3.channelwise.4.lora_A.weight', 'blocks.5.attention.to_q.lora_B.weight'],
      ],
      [
        ['blocks.5.attention.to_k', 'blocks.5.kv_mapper.1'],
        ['blocks.5.kv_mapper.1.lora_A.weight', 'blocks.5.attention.to_k.lora_A.weight'],
      ],
      [
        ['blocks.1.mapper', 'blocks.5.attention.to_v'],
        ['blocks.1.mapper.lora_A.weight', 'blocks.5.attention.to_v.lora_B.weight'],
      ],
    ];
    for (const [targets, names] of cases) {
      const prior = await loadPrior(base, { lora: { rank: 2, alpha: 2, targets, seed: 9 } });
      setWaveWeights(prior, Math.cos, 0.53);
      await expectFiniteDifferences(prior, names, 6, 3.17);
    }
  });

  it('finite differences agree at batch 1, where the text keys get no input gradient', async () => {
    // At batch 1 to_k and to_v take their text rows in a call of their own without dx: the
    // adapters' own gradients still sum over the text rows, and the latents' dx reaches below.
    const prior = await loadPrior(base, { lora: { rank: 4, alpha: 8, seed: 2 } });
    setWaveWeights(prior, Math.sin, 0.71);
    await expectFiniteDifferences(
      prior,
      [
        'blocks.5.attention.to_k.lora_A.weight',
        'blocks.5.attention.to_v.lora_B.weight',
        'blocks.2.attention.to_q.lora_B.weight',
        'blocks.2.attention.to_v.lora_A.weight',
      ],
      8,
      5.3,
      true,
    );
  });
});

describe('LoRA files', () => {
  it("saves diffusers' format with alpha/r folded into lora_B, and loads it back to the same output", async () => {
    const prior = await loadPrior(base);
    prior.loadLora(join(base, 'lora_peft')); // rank 4, alpha 8: scale 2
    const dir = mkdtempSync(join(tmpdir(), 'lora-train-save-'));
    const file = prior.saveLora(dir);
    expect(file).toBe(join(dir, 'pytorch_lora_weights.safetensors'));
    const saved = readSafetensors(file);
    expect(saved.metadata.format).toBe('pt');
    const meta = JSON.parse(saved.metadata.lora_adapter_metadata!) as Record<string, unknown>;
    expect(meta).toMatchObject({ 'prior.r': 4, 'prior.lora_alpha': 4 });
    expect(meta['prior.target_modules']).toContain('blocks.2.attention.to_q');
    expect([...saved.entries.keys()].sort()).toEqual(
      [...ref.entries.keys()]
        .filter((k) => k.startsWith('lora.'))
        .map((k) => `prior.${k.slice(5)}`)
        .sort(),
    );
    for (const [name, e] of saved.entries) expect(e.dtype, name).toBe('F32');
    const key = 'blocks.2.attention.to_k.lora_B.weight';
    expectClose(
      'lora_B folded',
      getTensor(saved, `prior.${key}`),
      { data: t(`lora.${key}`).data.map((v) => v * 2), shape: [32, 4] },
      1e-7,
    );
    const reloaded = await loadPrior(base);
    reloaded.loadLora(file);
    expectClose('reloaded', await reloaded.forward(...inputs()), t('merged_peft_out'), TOLERANCE.forward);
  });

  it("reads alpha from diffusers' lora_adapter_metadata and from a peft rsLoRA config", async () => {
    // The fixture's adapters (rank 4) saved unscaled with metadata alpha 8: diffusers >= 0.34
    // applies 8 / 4, so the output is the peft reference's.
    const dir = mkdtempSync(join(tmpdir(), 'lora-train-meta-'));
    const peft = readSafetensors(join(base, 'lora_peft', 'adapter_model.safetensors'));
    const tensors: Record<string, Tensor> = {};
    for (const k of peft.entries.keys()) tensors[k.replace('base_model.model.', 'prior.')] = getTensor(peft, k);
    writeSafetensors(join(dir, 'pytorch_lora_weights.safetensors'), tensors, {
      format: 'pt',
      lora_adapter_metadata: JSON.stringify({ 'prior.r': 4, 'prior.lora_alpha': 8 }),
    });
    const prior = await loadPrior(base);
    prior.loadLora(dir);
    expect(prior.loraState).toMatchObject({ rank: 4, alpha: 8 });
    expectClose('metadata alpha', await prior.forward(...inputs()), t('merged_peft_out'), TOLERANCE.forward);
    // rsLoRA scales by alpha / sqrt(r): alpha 4 at rank 4 is a scale of 2, the reference's.
    const rs = mkdtempSync(join(tmpdir(), 'lora-train-rslora-'));
    cpSync(join(base, 'lora_peft'), rs, { recursive: true });
    const config = JSON.parse(readFileSync(join(rs, 'adapter_config.json'), 'utf8')) as object;
    writeFileSync(join(rs, 'adapter_config.json'), JSON.stringify({ ...config, lora_alpha: 4, use_rslora: true }));
    prior.loadLora(rs);
    expect(prior.loraState?.alpha).toBe(8); // stored as alpha' / r = 2
    expectClose('rsLoRA', await prior.forward(...inputs()), t('merged_peft_out'), TOLERANCE.forward);
  });

  it('refuses files whose keys or ranks do not fit, listing what did not match', async () => {
    const prior = await loadPrior(base);
    const dir = mkdtempSync(join(tmpdir(), 'lora-train-bad-'));
    const a = { data: new Float32Array(4 * 32), shape: [4, 32] };
    const b = { data: new Float32Array(32 * 4), shape: [32, 4] };
    const write = (name: string, tensors: Record<string, Tensor>) => {
      writeSafetensors(join(dir, name), tensors, { format: 'pt' });
      return join(dir, name);
    };
    expect(() =>
      prior.loadLora(write('kohya.safetensors', { 'lora_unet_blocks_2_attention_to_q.lora_down.weight': a })),
    ).toThrow(/kohya-style LoRA keys/);
    const misfit = write('misfit.safetensors', {
      'prior.blocks.99.attention.to_q.lora_A.weight': a,
      'prior.blocks.99.attention.to_q.lora_B.weight': b,
      'prior.blocks.2.attention.to_q.lora_A.weight': { data: new Float32Array(4 * 31), shape: [4, 31] },
      'prior.blocks.2.attention.to_q.lora_B.weight': b,
    });
    const error = (() => {
      try {
        prior.loadLora(misfit);
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    })();
    expect(error).toContain('the LoRA does not fit this prior');
    expect(error).toContain('blocks.99.attention.to_q: no such Linear layer in this prior');
    expect(error).toContain(
      'blocks.2.attention.to_q.lora_A.weight: shape [4, 31] in the file, the prior needs [4, 32]',
    );
    const ranks = write('ranks.safetensors', {
      'prior.blocks.2.attention.to_q.lora_A.weight': a,
      'prior.blocks.2.attention.to_q.lora_B.weight': { data: new Float32Array(32 * 3), shape: [32, 3] },
    });
    expect(() => prior.loadLora(ranks)).toThrow(
      'blocks.2.attention.to_q: lora_A [4, 32] and lora_B [32, 3] disagree on the rank',
    );
    const half = write('half.safetensors', { 'prior.blocks.2.attention.to_q.lora_A.weight': a, 'unet.something': a });
    expect(() => prior.loadLora(half)).toThrow(
      /unet\.something: not a prior\.<module>\.lora_A\/B\.weight key[\s\S]*blocks\.2\.attention\.to_q: has lora_A but not lora_B/,
    );
  });
});

describe('fp16 loss scaling', () => {
  it('skips the update when scaled gradients overflow fp16, and a finite scale updates', async () => {
    const prior = await loadPrior(base, { precision: 'fp16' });
    prior.loadLora(join(base, 'lora_peft'));
    const before = prior.loraWeights();
    const step = async (lossScale: number) => {
      await prior.step(t('x'), t('r'), t('clip'), t('target'), { train: false, lossScale });
      return prior.optimizerStep({ lr: 1e-2, lossScale }, 1);
    };
    // 2^40 times dL/dout cannot be held by fp16 GEMM operands (max 65504): inf/NaN gradients.
    const overflow = await step(2 ** 40);
    expect(Number.isFinite(overflow)).toBe(false);
    for (const [name, w] of Object.entries(prior.loraWeights()))
      expect(w.data, `${name} unchanged`).toEqual(before[name]!.data);
    const norm = await step(2 ** 10);
    expect(Number.isFinite(norm) && norm > 0).toBe(true);
    const changed = Object.entries(prior.loraWeights()).filter(
      ([name, w]) => relativeError(w.data, before[name]!.data) > 0,
    );
    expect(changed.length).toBe(Object.keys(before).length);
  });

  it('refuses an unknown precision', async () => {
    await expect(loadPrior(base, { precision: 'fp8' as 'fp16' })).rejects.toThrow(
      "loadPrior: Expected 'fp32', 'bf16' or 'fp16' for precision but received 'fp8'",
    );
  });
});
