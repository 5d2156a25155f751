// The Würstchen prior as a library object: loads a diffusers prior folder, trains LoRA adapters
// natively, reads and writes LoRA files in diffusers' and peft's formats.
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CONFIG_DEFAULTS } from '../config/schema.js';
import { describeNonFinite } from '../core/finite.js';
import { nullRecord } from '../core/untrusted.js';
import { type Device, checkDevice } from '../core/device.js';
import type { NativeCollective, NativePrior } from '../native/addon.js';
import { native } from '../native/loader.js';
import { Rng } from '../core/rng.js';
import { type SafetensorsFile, getTensor, readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { ShapeCheck, type Tensor, invalid } from '../core/tensor.js';
import { type Precision, weightType } from './precision.js';
import { MAX_MODEL_DIM, buildFrom, loadCheckedWeights, readJsonConfig, shapeText, weightFiles } from './weights.js';

export interface PriorConfig {
  c_in: number;
  c: number;
  c_cond: number;
  c_r: number;
  depth: number;
  nhead: number;
  dropout: number;
}

export interface LoraOptions {
  /** Rank r (default 8). */
  rank?: number;
  /** alpha; the adapter's output is scaled by alpha / r (default: rank). */
  alpha?: number;
  /** Module-name suffixes, as peft's target_modules (default to_q, to_k, to_v, to_out.0). */
  targets?: string[];
  /** Dropout on the adapter's input in training (default 0). */
  dropout?: number;
  /** Seed of the kaiming-uniform initialisation of lora_A (lora_B starts at zero). */
  seed?: number;
}

export type { Precision } from './precision.js';

export interface LoadPriorOptions {
  device?: Device;
  lora?: LoraOptions;
  precision?: Precision;
}

export interface ForwardOptions {
  /** Training mode: dropout active (default false). */
  train?: boolean;
  /** Seed of this call's dropout masks (default 0). */
  seed?: number;
}

export interface StepOptions {
  /** Seed of this step's dropout masks (default 0). */
  seed?: number;
  /** Dropout active (default true, as in training). */
  train?: boolean;
  /** Add to the gradients already held instead of replacing them (gradient accumulation). */
  accumulate?: boolean;
  /** Multiplies the loss's gradient (fp16 loss scaling; pass the same to optimizerStep). */
  lossScale?: number;
  /** Data parallelism: the gradients end summed over these processes (the step that ends an
   * accumulation round), in buckets summed while the backward still runs. */
  sync?: GradientSync;
}

export interface GradientSync {
  collective: NativeCollective;
  /** The most bytes of gradients one bucket holds (the first holds at most 1 MiB). */
  bucketBytes: number;
}

export interface AdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Global grad-norm clipping (0: none). */
  maxNorm?: number;
  /** The loss scale the gradients were computed with; they are divided by it. */
  lossScale?: number;
  /** Processes whose gradients were summed into these (allreduceGrads); they are divided by it. */
  processes?: number;
}

const DIFFUSERS_PREFIX = 'prior.';
const PEFT_PREFIX = 'base_model.model.';
export const DIFFUSERS_LORA_FILE = 'pytorch_lora_weights.safetensors';

/** The native prior of `config` (from `file`, named if its sizes cannot be allocated). */
function createNative(
  op: string,
  config: PriorConfig,
  options: LoadPriorOptions,
  file = '<config>',
): { device: Device; precision: Precision; model: NativePrior } {
  const device = checkDevice(op, options.device);
  const precision = options.precision ?? 'fp32';
  const weight_type = weightType(op, precision);
  const model = buildFrom(file, () => new (native().Prior)(device, { ...config, weight_type }));
  return { device, precision, model };
}

/** The folder holding config.json: the given one, or its prior/ subfolder (a whole snapshot). */
export function resolvePriorFolder(dir: string): string {
  if (existsSync(join(dir, 'prior', 'config.json'))) return join(dir, 'prior');
  if (existsSync(join(dir, 'config.json'))) return dir;
  throw new Error(
    `${dir}: no prior here (looked for ${join(dir, 'prior', 'config.json')} and ${join(dir, 'config.json')})`,
  );
}

export function readPriorConfig(file: string): PriorConfig {
  const raw = readJsonConfig(file, 'prior');
  if (raw._class_name !== undefined && raw._class_name !== 'WuerstchenPrior')
    throw new Error(`${file}: _class_name is ${JSON.stringify(raw._class_name)}, expected "WuerstchenPrior"`);
  // diffusers' defaults for keys a config leaves out
  const defaults: PriorConfig = { c_in: 16, c: 1280, c_cond: 1024, c_r: 64, depth: 16, nhead: 16, dropout: 0.1 };
  const config = { ...defaults };
  for (const key of Object.keys(defaults) as (keyof PriorConfig)[]) {
    const v = raw[key] ?? defaults[key];
    const ok =
      key === 'dropout'
        ? typeof v === 'number' && v >= 0 && v < 1
        : Number.isInteger(v) && (v as number) >= 1 && (v as number) <= MAX_MODEL_DIM;
    if (!ok)
      throw new Error(
        `${file}: ${key} must be ${key === 'dropout' ? 'a number in [0, 1)' : `a positive integer <= ${MAX_MODEL_DIM}`}, got ${JSON.stringify(v)}`,
      );
    config[key] = v as number;
  }
  if (config.c % config.nhead !== 0)
    throw new Error(`${file}: c (${config.c}) is not divisible by nhead (${config.nhead})`);
  return config;
}

/** Kaiming-uniform with a = sqrt(5) (torch.nn.Linear's and peft's lora_A init): U(-1/sqrt(in), 1/sqrt(in)). */
function kaimingUniform(rng: Rng, rows: number, fanIn: number): Float32Array {
  const bound = 1 / Math.sqrt(fanIn);
  return Float32Array.from({ length: rows * fanIn }, () => (rng.uniform() * 2 - 1) * bound);
}

/** PyTorch's default initialisation of the prior's parameters, drawn in their order: weights and
 * biases uniform in +-1/sqrt(fan_in) of their layer, GlobalResponseNorm zero (as diffusers),
 * except that out.1 is scaled by 0.1: the output divides by |1 - b| + 1e-5, and with the
 * default init b reaches 1 somewhere and the output (and any rounding) explodes; a trained
 * prior keeps b far from 1. Yields one tensor at a time, so a 1B-parameter prior never holds
 * all of them in JS. */
export function* priorDefaultInit(
  shapes: { name: string; shape: number[] }[],
  rng: Rng,
): Generator<[string, Float32Array]> {
  const byName = new Map(shapes.map((p) => [p.name, p.shape]));
  for (const { name, shape } of shapes) {
    const values = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (!name.endsWith('.gamma') && !name.endsWith('.beta')) {
      const fanIn = byName
        .get(name.replace(/\.bias$/, '.weight'))!
        .slice(1)
        .reduce((a, b) => a * b, 1);
      const bound = 1 / Math.sqrt(fanIn);
      for (let i = 0; i < values.length; i++) values[i] = (rng.uniform() * 2 - 1) * bound;
      if (name.startsWith('out.1.')) for (let i = 0; i < values.length; i++) values[i] = values[i]! * 0.1;
    }
    yield [name, values];
  }
}

export interface LoraState {
  rank: number;
  alpha: number;
  targets: string[];
  dropout: number;
}

export class Prior {
  private lora: LoraState | undefined;

  private constructor(
    readonly config: PriorConfig,
    readonly device: Device,
    readonly precision: Precision,
    private readonly model: NativePrior,
  ) {}

  /** Loads config and weights (F32, F16 or BF16; single file or sharded), checking every tensor. */
  static async load(dir: string, options: LoadPriorOptions = {}): Promise<Prior> {
    const folder = resolvePriorFolder(dir);
    const configFile = join(folder, 'config.json');
    const config = readPriorConfig(configFile);
    const { device, precision, model } = createNative('loadPrior', config, options, configFile);
    loadCheckedWeights(folder, weightFiles(folder, 'diffusion_pytorch_model'), model);
    const prior = new Prior(config, device, precision, model);
    if (options.lora) prior.addLora(options.lora);
    return prior;
  }

  /** A prior with PyTorch's default initialisation (weights and biases uniform in
   * +-1/sqrt(fan_in), GlobalResponseNorm zero), drawn from a seed: for benchmarks and the
   * built-in demo model. */
  static random(config: PriorConfig, options: LoadPriorOptions & { seed?: number } = {}): Prior {
    const { device, precision, model } = createNative('Prior.random', config, options);
    for (const [name, values] of priorDefaultInit(model.parameters(), new Rng(options.seed ?? 0)))
      model.setParameter(name, values);
    const prior = new Prior(config, device, precision, model);
    if (options.lora) prior.addLora(options.lora);
    return prior;
  }

  get loraState(): LoraState | undefined {
    return this.lora ? { ...this.lora, targets: [...this.lora.targets] } : undefined;
  }

  /** Adds fresh adapters: lora_A kaiming-uniform from the seed, lora_B zero (peft's init). */
  addLora(options: LoraOptions = {}): void {
    const s = new ShapeCheck('addLora');
    const defaults = CONFIG_DEFAULTS.model.prior_lora_config;
    const rank = s.positiveInteger('lora.rank', options.rank ?? defaults.r);
    const widest = this.widestLayer();
    if (rank > widest)
      invalid(
        'addLora',
        `a rank <= ${widest} (the prior's widest layer; more adds nothing)`,
        'lora.rank',
        rank,
        RangeError,
      );
    const alpha = s.finite('lora.alpha', options.alpha ?? rank);
    const dropout = s.finite('lora.dropout', options.dropout ?? defaults.lora_dropout);
    const targets = options.targets ?? defaults.target_modules;
    if (!Array.isArray(targets) || targets.length === 0 || !targets.every((t) => typeof t === 'string'))
      invalid('addLora', 'a non-empty array of module names', 'lora.targets', targets);
    this.enable({ rank, alpha, targets: [...targets], dropout });
    const rng = new Rng(options.seed ?? 0);
    for (const p of this.model.loraParameters())
      if (p.name.endsWith('.lora_A.weight')) this.model.setLora(p.name, kaimingUniform(rng, p.shape[0]!, p.shape[1]!));
  }

  /** The largest min(out, in) of the prior's Linear layers: the highest rank any adapter can use. */
  private widestLayer(): number {
    let widest = 0;
    for (const { shape } of this.model.parameters())
      if (shape.length === 2) widest = Math.max(widest, Math.min(shape[0]!, shape[1]!));
    return widest;
  }

  private enable(state: LoraState): void {
    try {
      this.model.enableLora(state);
    } catch (e) {
      throw new Error(`LoRA: ${(e as Error).message}`);
    }
    this.lora = state;
  }

  private requireLora(op: string): LoraState {
    if (!this.lora)
      throw new Error(`${op}: the prior has no LoRA adapters (pass { lora } to loadPrior, or call addLora / loadLora)`);
    return this.lora;
  }

  private checkInputs(op: string, x: Tensor, r: Tensor, clip: Tensor, target?: Tensor) {
    const s = new ShapeCheck(op);
    s.tensor('x', x, ['B', this.config.c_in, 'H', 'W']);
    s.tensor('r', r, ['B']);
    s.tensor('clip', clip, ['B', 'T', this.config.c_cond]);
    if (target) s.tensor('target', target, ['B', this.config.c_in, 'H', 'W']);
    return { B: s.dim('B'), H: s.dim('H'), W: s.dim('W'), T: s.dim('T') };
  }

  /** eps = prior(x (B, c_in, H, W), r (B), clip (B, T, c_cond)). */
  async forward(x: Tensor, r: Tensor, clip: Tensor, options: ForwardOptions = {}): Promise<Tensor> {
    const { B, H, W, T } = this.checkInputs('forward', x, r, clip);
    const out = { data: new Float32Array(x.data.length), shape: [...x.shape] };
    await this.model.forward(
      out.data,
      x.data,
      r.data,
      clip.data,
      B,
      H,
      W,
      T,
      options.train ?? false,
      options.seed ?? 0,
    );
    return out;
  }

  /** MSE of prior(x, r, clip) against target, and its gradients for every LoRA tensor, keyed as
   * in the diffusers LoRA file (prior.<module>.lora_A.weight). */
  async lossAndGrad(
    x: Tensor,
    r: Tensor,
    clip: Tensor,
    target: Tensor,
    options: StepOptions = {},
  ): Promise<{ loss: number; grads: Record<string, Tensor> }> {
    const loss = await this.step(x, r, clip, target, options);
    return { loss, grads: this.loraGradients() };
  }

  /** The LoRA gradients held now (after a step, or summed by allreduceGrads), keyed as in
   * diffusers' LoRA files. */
  loraGradients(): Record<string, Tensor> {
    this.requireLora('loraGradients');
    const grads: Record<string, Tensor> = {};
    for (const p of this.model.loraParameters()) {
      const data = new Float32Array(p.shape[0]! * p.shape[1]!);
      this.model.getLoraGrad(p.name, data);
      grads[DIFFUSERS_PREFIX + p.name] = { data, shape: p.shape };
    }
    return grads;
  }

  /** Forward, loss and backward without copying the gradients out (the training loop's call). */
  async step(x: Tensor, r: Tensor, clip: Tensor, target: Tensor, options: StepOptions = {}): Promise<number> {
    this.requireLora('lossAndGrad');
    const { B, H, W, T } = this.checkInputs('lossAndGrad', x, r, clip, target);
    const s = new ShapeCheck('lossAndGrad');
    const lossScale = s.finite('lossScale', options.lossScale ?? 1);
    return this.model.lossAndGrad(
      x.data,
      r.data,
      clip.data,
      target.data,
      B,
      H,
      W,
      T,
      options.seed ?? 0,
      options.accumulate ?? false,
      options.train ?? true,
      lossScale,
      options.sync?.collective,
      options.sync && s.positiveInteger('sync.bucketBytes', options.sync.bucketBytes),
    );
  }

  /** Clips the global gradient norm, then one AdamW step; returns the norm before clipping.
   * A norm that is not finite (fp16 overflow) means nothing was updated. */
  async optimizerStep(options: AdamWOptions, step: number): Promise<number> {
    this.requireLora('optimizerStep');
    const s = new ShapeCheck('optimizerStep');
    s.positiveInteger('step', step);
    const defaults = CONFIG_DEFAULTS.optim_wrapper.optimizer;
    return this.model.optimizerStep(
      s.finite('lr', options.lr),
      s.finite('beta1', options.beta1 ?? defaults.betas[0]),
      s.finite('beta2', options.beta2 ?? defaults.betas[1]),
      s.finite('eps', options.eps ?? defaults.eps),
      s.finite('weightDecay', options.weightDecay ?? defaults.weight_decay),
      s.finite('maxNorm', options.maxNorm ?? 0),
      step,
      1 / (s.finite('lossScale', options.lossScale ?? 1) * s.positiveInteger('processes', options.processes ?? 1)),
    );
  }

  /** Every LoRA gradient summed over the group's processes, in place (data parallelism); the
   * next optimizerStep then takes `processes` to average them. */
  async allreduceGrads(collective: NativeCollective): Promise<void> {
    this.requireLora('allreduceGrads');
    await this.model.allreduceGrads(collective);
  }

  /** Floats of each bucket a synchronising step sums (GradientSync), in the order it starts
   * them: the last layers' first, the first bucket at most 1 MiB. */
  gradientBuckets(bucketBytes: number): number[] {
    this.requireLora('gradientBuckets');
    return this.model.gradientBuckets(new ShapeCheck('gradientBuckets').positiveInteger('bucketBytes', bucketBytes));
  }

  /** The adapters as trained: module path -> { A (r, in), B (out, r) }, unscaled. */
  loraWeights(): Record<string, Tensor> {
    this.requireLora('loraWeights');
    const out: Record<string, Tensor> = {};
    for (const p of this.model.loraParameters()) {
      const data = new Float32Array(p.shape[0]! * p.shape[1]!);
      this.model.getLora(p.name, data);
      out[p.name] = { data, shape: p.shape };
    }
    return out;
  }

  /** Runs fn with the adapters contributing nothing (lora_B zero), then restores them. */
  async withoutAdapters<T>(fn: () => Promise<T>): Promise<T> {
    const trained = this.loraWeights();
    const zeroB = Object.entries(trained).filter(([name]) => name.endsWith('.lora_B.weight'));
    this.setLoraWeights(
      Object.fromEntries(zeroB.map(([name, t]) => [name, { data: new Float32Array(t.data.length), shape: t.shape }])),
    );
    try {
      return await fn();
    } finally {
      this.setLoraWeights(trained);
    }
  }

  /** The adapters' parameter names ("<module>.lora_A.weight", …), as loraWeights keys them. */
  loraParameterNames(): string[] {
    this.requireLora('loraParameterNames');
    return this.model.loraParameters().map((p) => p.name);
  }

  /** Sets adapter weights by module parameter name (as loraWeights returns them). */
  setLoraWeights(weights: Record<string, Tensor>): void {
    this.requireLora('setLoraWeights');
    const expected = new Map(this.model.loraParameters().map((p) => [p.name, p.shape]));
    for (const [name, t] of Object.entries(weights)) {
      const shape = expected.get(name);
      if (!shape) throw new Error(`setLoraWeights: no LoRA parameter named '${name}'`);
      new ShapeCheck('setLoraWeights').tensor(name, t, shape);
      this.model.setLora(name, t.data);
    }
  }

  /** AdamW moments of every LoRA tensor ("<name>.exp_avg", "<name>.exp_avg_sq"). */
  optimizerState(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const p of this.model.loraParameters())
      for (const suffix of ['.exp_avg', '.exp_avg_sq']) {
        const data = new Float32Array(p.shape[0]! * p.shape[1]!);
        this.model.getOptimizerState(p.name + suffix, data);
        out[p.name + suffix] = { data, shape: p.shape };
      }
    return out;
  }

  setOptimizerState(state: Record<string, Tensor>): void {
    for (const [name, t] of Object.entries(state)) this.model.setOptimizerState(name, t.data);
  }

  /** Bytes of the planned activation memory (after the first forward or step). */
  activationBytes(): number {
    return this.model.activationBytes();
  }

  /** Bytes of the frozen parameters as stored (half of fp32's Linear weights in bf16/fp16). */
  parameterBytes(): number {
    return this.model.parameterBytes();
  }

  /**
   * Writes the adapters in diffusers' format: pytorch_lora_weights.safetensors (path may be
   * that file or a folder), keys prior.<module>.lora_A/B.weight, F32, alpha/r folded into
   * lora_B so that every diffusers version (which loads with alpha = r unless told) reproduces
   * this model, and metadata format=pt plus lora_adapter_metadata saying alpha = r.
   */
  saveLora(path: string): string {
    const lora = this.requireLora('saveLora');
    const file = path.endsWith('.safetensors') ? path : join(path, DIFFUSERS_LORA_FILE);
    mkdirSync(dirname(file), { recursive: true });
    const scale = lora.alpha / lora.rank;
    const tensors: Record<string, Tensor> = {};
    const weights = this.loraWeights();
    for (const [name, t] of Object.entries(weights))
      tensors[DIFFUSERS_PREFIX + name] = name.endsWith('.lora_B.weight')
        ? { data: t.data.map((v) => v * scale), shape: t.shape }
        : t;
    const modules = [...new Set(Object.keys(weights).map((k) => k.replace(/\.lora_[AB]\.weight$/, '')))];
    const adapterMetadata = {
      'prior.r': lora.rank,
      'prior.lora_alpha': lora.rank,
      'prior.target_modules': modules,
      'prior.lora_dropout': lora.dropout,
      'prior.bias': 'none',
      'prior.use_dora': false,
      'prior.use_rslora': false,
      'prior.init_lora_weights': true,
    };
    writeSafetensors(file, tensors, { format: 'pt', lora_adapter_metadata: JSON.stringify(adapterMetadata, null, 2) });
    return file;
  }

  /** Loads adapters from a diffusers LoRA file (or a folder holding one) or a peft folder
   * (adapter_model.safetensors + adapter_config.json), replacing the current ones. */
  loadLora(path: string): void {
    const loaded = readLoraFile(path);
    const weightShapes = new Map(this.model.parameters().map((p) => [p.name, p.shape]));
    const problems: string[] = [];
    for (const [module, { A, B }] of Object.entries(loaded.weights)) {
      const w = weightShapes.get(`${module}.weight`);
      if (!w || w.length !== 2) {
        problems.push(`${module}: no such Linear layer in this prior`);
        continue;
      }
      const [out, inF] = w as [number, number];
      if (shapeText(A.shape) !== shapeText([loaded.rank, inF]))
        problems.push(
          `${module}.lora_A.weight: shape ${shapeText(A.shape)} in the file, the prior needs ${shapeText([loaded.rank, inF])}`,
        );
      if (shapeText(B.shape) !== shapeText([out, loaded.rank]))
        problems.push(
          `${module}.lora_B.weight: shape ${shapeText(B.shape)} in the file, the prior needs ${shapeText([out, loaded.rank])}`,
        );
    }
    if (problems.length)
      throw new Error(`${loaded.file}: the LoRA does not fit this prior:\n  - ${problems.join('\n  - ')}`);
    this.enable({
      rank: loaded.rank,
      alpha: loaded.alpha,
      targets: Object.keys(loaded.weights),
      dropout: loaded.dropout,
    });
    for (const [module, { A, B }] of Object.entries(loaded.weights)) {
      this.model.setLora(`${module}.lora_A.weight`, A.data);
      this.model.setLora(`${module}.lora_B.weight`, B.data);
    }
  }
}

interface LoadedLora {
  file: string;
  rank: number;
  alpha: number;
  dropout: number;
  weights: Record<string, { A: Tensor; B: Tensor }>;
}

/** Parses a LoRA file in diffusers' or peft's layout into per-module A/B pairs. */
export function readLoraFile(path: string): LoadedLora {
  const { file, peftConfig } = loraLocation(path);
  if (!existsSync(file))
    throw new Error(
      `${file}: no LoRA file here (expected ${DIFFUSERS_LORA_FILE}, or a peft folder with adapter_config.json)`,
    );
  const st: SafetensorsFile = readSafetensors(file);
  const keys = [...st.entries.keys()];
  if (keys.some((k) => k.startsWith('lora_unet_') || k.startsWith('lora_te')))
    throw new Error(
      `${file}: kohya-style LoRA keys (lora_unet_…) do not load into the diffusers Würstchen prior; convert the file to diffusers' format first`,
    );
  const { weights, problems } = loraPairs(st, peftConfig ? PEFT_PREFIX : DIFFUSERS_PREFIX);
  const ranks = new Set<number>();
  for (const [module, { A, B }] of Object.entries(weights)) {
    if (!A || !B) problems.push(`${module}: has lora_${A ? 'A' : 'B'} but not lora_${A ? 'B' : 'A'}`);
    else {
      if (A.shape.length !== 2 || B.shape.length !== 2 || A.shape[0] !== B.shape[1])
        problems.push(`${module}: lora_A ${shapeText(A.shape)} and lora_B ${shapeText(B.shape)} disagree on the rank`);
      else if (A.shape[0] === 0) problems.push(`${module}: has rank 0`);
      ranks.add(A.shape[0]!);
    }
  }
  if (Object.keys(weights).length === 0) problems.push('no LoRA tensors found');
  if (ranks.size > 1) problems.push(`mixed ranks ${[...ranks].join(', ')} (one rank per file is supported)`);
  if (problems.length) throw new Error(`${file}: not a usable LoRA file:\n  - ${problems.join('\n  - ')}`);
  const rank = [...ranks][0]!;
  const { alpha, dropout } = loraScaling(file, rank, peftConfig, st.metadata.lora_adapter_metadata);
  return { file, rank, alpha, dropout, weights: weights as Record<string, { A: Tensor; B: Tensor }> };
}

/** The safetensors file a LoRA path names (the file, or a diffusers or peft folder), and the
 * peft folder's adapter_config.json. */
function loraLocation(path: string): { file: string; peftConfig?: Record<string, unknown> } {
  if (!existsSync(path) || !statSync(path).isDirectory()) return { file: path };
  const configFile = join(path, 'adapter_config.json');
  if (!existsSync(configFile)) return { file: join(path, DIFFUSERS_LORA_FILE) };
  let peftConfig: unknown;
  try {
    peftConfig = JSON.parse(readFileSync(configFile, 'utf8'));
  } catch (e) {
    throw new Error(`${configFile}: cannot read the peft adapter config (${(e as Error).message})`);
  }
  if (typeof peftConfig !== 'object' || peftConfig === null || Array.isArray(peftConfig))
    throw new Error(`${configFile}: not a peft adapter config (expected a JSON object)`);
  return { file: join(path, 'adapter_model.safetensors'), peftConfig: peftConfig as Record<string, unknown> };
}

/** The file's tensors as per-module lora_A/lora_B pairs, and what is wrong with any of them. */
function loraPairs(st: SafetensorsFile, prefix: string) {
  const weights = nullRecord<{ A?: Tensor; B?: Tensor }>();
  const problems: string[] = [];
  for (const key of st.entries.keys()) {
    const m = key.startsWith(prefix) ? /^(.*)\.lora_([AB])\.weight$/.exec(key.slice(prefix.length)) : null;
    if (!m) {
      problems.push(`${key}: not a ${prefix}<module>.lora_A/B.weight key`);
      continue;
    }
    const t = getTensor(st, key);
    const nonFinite = describeNonFinite(key, t.data);
    if (nonFinite) problems.push(nonFinite);
    (weights[m[1]!] ??= {})[m[2] as 'A' | 'B'] = t;
  }
  return { weights, problems };
}

/** alpha and dropout of a LoRA file of rank `rank`: from peft's adapter_config.json, else
 * diffusers' lora_adapter_metadata, else alpha = r as diffusers loads a file without either. */
function loraScaling(
  file: string,
  rank: number,
  peftConfig: Record<string, unknown> | undefined,
  adapterMetadata: string | undefined,
): { alpha: number; dropout: number } {
  /** A number the file may leave out (null too, as peft writes unset values). */
  const numberAt = (where: string, value: unknown, fallback: number, valid: (n: number) => boolean) => {
    if (value === undefined || value === null) return fallback;
    if (typeof value !== 'number' || !valid(value))
      throw new Error(
        `${file}: ${where} is ${typeof value === 'number' ? value : JSON.stringify(value)}, not a usable value`,
      );
    return value;
  };
  // The scale alpha / r is applied in fp32: an alpha past fp32's range is Inf there.
  const positive = (n: number) => Number.isFinite(Math.fround(n)) && n > 0;
  if (peftConfig) {
    if (peftConfig.r != null && peftConfig.r !== rank)
      throw new Error(
        `${file}: adapter_config.json says r = ${JSON.stringify(peftConfig.r)}, the tensors have rank ${rank}`,
      );
    for (const key of ['rank_pattern', 'alpha_pattern'])
      if (peftConfig[key] && Object.keys(peftConfig[key]).length)
        throw new Error(`${file}: adapter_config.json uses ${key}, which lora-train does not support`);
    if (peftConfig.use_dora) throw new Error(`${file}: DoRA adapters (use_dora) are not supported`);
    let alpha = numberAt('adapter_config.json lora_alpha', peftConfig.lora_alpha, rank, positive);
    if (peftConfig.use_rslora) alpha *= Math.sqrt(rank); // rsLoRA scales by alpha / sqrt(r) = (alpha sqrt(r)) / r
    const dropout = numberAt('adapter_config.json lora_dropout', peftConfig.lora_dropout, 0, (p) => p >= 0 && p < 1);
    return { alpha, dropout };
  }
  if (!adapterMetadata) return { alpha: rank, dropout: 0 };
  let meta: unknown;
  try {
    meta = JSON.parse(adapterMetadata);
  } catch (e) {
    throw new Error(`${file}: lora_adapter_metadata is not JSON (${(e as Error).message})`);
  }
  if (typeof meta !== 'object' || meta === null || Array.isArray(meta))
    throw new Error(`${file}: lora_adapter_metadata is not a JSON object`);
  const fields = meta as Record<string, unknown>;
  if (fields['prior.r'] != null && fields['prior.r'] !== rank)
    throw new Error(
      `${file}: lora_adapter_metadata says r = ${JSON.stringify(fields['prior.r'])}, the tensors have rank ${rank}`,
    );
  return {
    alpha: numberAt("lora_adapter_metadata's prior.lora_alpha", fields['prior.lora_alpha'], rank, positive),
    dropout: 0,
  };
}

/** Loads a diffusers prior folder (or a snapshot with prior/ inside). */
export function loadPrior(dir: string, options: LoadPriorOptions = {}): Promise<Prior> {
  return Prior.load(dir, options);
}
