// The training config, declared once: every key with its type, default and meaning, in
// diffengine's (mmengine's) key names. The config types (LoraTrainConfig as resolved,
// ConfigInput as written), validation, the CLI's option types and docs/config.md all derive
// from this declaration. Keys whose default depends on another key are resolved at the end.
import * as z from 'zod';
import { DEVICES } from '../core/device.js';

const expected = (what: string) => ({ error: what });
const string = () => z.string(expected('a string'));
const boolean = () => z.boolean(expected('true or false'));
const number = () => z.number(expected('a finite number'));
const positiveNumber = () => z.number(expected('a positive number')).positive(expected('a positive number'));
const positiveInteger = () => z.int(expected('a positive integer')).positive(expected('a positive integer'));
/** A positive integer up to `max`: sizes whose absurd values would only exhaust memory. */
const upTo = (max: number) => {
  const what = expected(`a positive integer <= ${max}`);
  return z.int(what).positive(what).max(max, what);
};
/** Image sides: 8192 pixels is 192 latent pixels, already far past what the prior was trained on. */
const pixels = () => upTo(8192);
const nonEmpty = () => z.string(expected('a non-empty string')).min(1, expected('a non-empty string'));
/** A number in [0, 1): AdamW's betas, as torch checks them. */
const decay = () =>
  z
    .number(expected('a number in [0, 1)'))
    .nonnegative(expected('a number in [0, 1)'))
    .lt(1, expected('a number in [0, 1)'));
const count = () => z.int(expected('an integer >= 0')).nonnegative(expected('an integer >= 0'));
const probability = () =>
  z
    .number(expected('a number in [0, 1)'))
    .nonnegative(expected('a number in [0, 1)'))
    .lt(1, expected('a number in [0, 1)'));
const strings = () => z.array(string(), expected('an array of strings'));
const oneOf = <const T extends readonly [string, ...string[]]>(values: T) =>
  z.enum(values, expected(`one of ${values.map((v) => JSON.stringify(v)).join(', ')}`));
/** A dict of keys: unknown keys are errors, and a missing dict takes its keys' defaults. */
const section = <S extends z.ZodRawShape>(shape: S) =>
  z.strictObject(shape, expected('an object')).prefault({} as never);

// ---- model ---------------------------------------------------------------------------------

export const DEFAULT_LORA_TARGETS = ['to_q', 'to_k', 'to_v', 'to_out.0'];

const imageEncoder = section({
  path: string().optional().describe("A .safetensors or .pt file, or 'builtin:tiny-wuerstchen'"),
  repo: string().optional().describe('A Hub repository holding `file` (fetched on first use)'),
  file: string().optional().describe('The file inside `repo`, e.g. model_v2_stage_b.pt'),
  key: string().default('effnet_state_dict').describe('The state dict inside a .pt checkpoint'),
  config: string().optional().describe('A JSON file with another stage layout than efficientnet_v2_s'),
  revision: nonEmpty().default('main').describe('The branch, tag or commit of `repo`'),
});

const lora = section({
  type: oneOf(['LoRA']).default('LoRA').describe("peft's LoRA (the one kind of adapter)"),
  r: positiveInteger().default(8).describe("The adapters' rank"),
  lora_alpha: positiveNumber().optional().describe('Scales the adapters by lora_alpha / r (default: r)'),
  target_modules: strings()
    .nonempty(expected('a non-empty array of strings'))
    .default(DEFAULT_LORA_TARGETS)
    .describe('Module-name suffixes, as peft matches them'),
  lora_dropout: probability().default(0).describe("Dropout on the adapters' input in training"),
});

const model = section({
  type: oneOf(['WuerstchenPriorModel'])
    .default('WuerstchenPriorModel')
    .describe("diffengine's model: the Würstchen prior"),
  prior_model: string()
    .optional()
    .describe(
      "Hub id or folder of the prior snapshot (prior/, text_encoder/, tokenizer/), or 'builtin:tiny-wuerstchen'",
    ),
  prior_revision: nonEmpty().default('main').describe('The branch, tag or commit of a Hub prior_model'),
  text_encoder_model: string()
    .optional()
    .describe('Hub id or folder holding text_encoder/ and tokenizer/ (default: prior_model)'),
  text_encoder_revision: nonEmpty()
    .optional()
    .describe(
      'The branch, tag or commit of a Hub text_encoder_model (default: prior_revision, or main for another repository)',
    ),
  image_encoder: imageEncoder.describe('The frozen EfficientNet encoder: `path`, or `repo` and `file`'),
  decoder_model: string()
    .optional()
    .describe(
      "Hub id or folder of the decoder snapshot (decoder/, vqgan/, text_encoder/, tokenizer/) that draws pictures, or 'builtin:tiny-wuerstchen'",
    ),
  decoder_revision: nonEmpty().default('main').describe('The branch, tag or commit of a Hub decoder_model'),
  prior_lora_config: lora,
});

// ---- data ----------------------------------------------------------------------------------

const size = z.union([positiveInteger(), z.tuple([positiveInteger(), positiveInteger()])], {
  error: 'a positive integer or [height, width]',
});
const channelStats = z
  .array(number(), expected('1 or 3 numbers'))
  .refine((a) => a.length === 1 || a.length === 3, expected('1 or 3 numbers'));
const named = <const T extends string>(name: T) => oneOf([name, `torchvision/${name}`]);

/** The image pipeline's steps, in torchvision's names (with or without `torchvision/`). */
const transform = z.discriminatedUnion(
  'type',
  [
    z.strictObject({
      type: named('Resize'),
      size: size.describe('The shorter side becomes size (bilinear), or [height, width]'),
      interpolation: oneOf(['bilinear']).default('bilinear').describe('Only bilinear, as torchvision defaults to'),
    }),
    z.strictObject({
      type: named('RandomCrop'),
      size: size.describe('Crop side, or [height, width], at a random place'),
    }),
    z.strictObject({ type: named('CenterCrop'), size: size.describe('Crop side, or [height, width], in the middle') }),
    z.strictObject({
      type: named('RandomHorizontalFlip'),
      p: z
        .number(expected('a number in [0, 1]'))
        .min(0, expected('a number in [0, 1]'))
        .max(1, expected('a number in [0, 1]'))
        .default(0.5)
        .describe('Probability of a horizontal flip'),
    }),
    z.strictObject({ type: named('ToTensor') }),
    z.strictObject({
      type: named('Normalize'),
      mean: channelStats.describe('Per channel (or one for all) subtracted from pixels in [0, 1]'),
      std: channelStats
        .refine((a) => a.every((s) => s > 0), expected('1 or 3 numbers above 0'))
        .describe('Per channel (or one for all) the difference is divided by'),
    }),
    z.strictObject({ type: oneOf(['PackInputs']) }),
  ],
  {
    error:
      'one of "torchvision/Resize", "RandomCrop", "CenterCrop", "RandomHorizontalFlip", "torchvision/ToTensor", "torchvision/Normalize", "PackInputs"',
  },
);
/** A pipeline step as checked, its defaults filled in. */
export type TransformConfig = z.output<typeof transform>;
/** A pipeline step as written. */
export type TransformInput = z.input<typeof transform>;
export const pipelineSchema = z.array(transform, expected('an array of transforms'));

const dataset = section({
  type: oneOf(['HFDataset']).default('HFDataset').describe("diffengine's dataset of images and captions"),
  dataset: string().optional().describe("Hub dataset id, folder, or parquet file; 'builtin:twemoji' for the demo's"),
  image_column: string().default('image').describe('The image column of parquet files ({bytes, path} or bytes)'),
  caption_column: string()
    .default('text')
    .describe('The caption column or metadata key (a string, or a list of which a step picks one)'),
  split: string().default('train').describe("The split of a Hub dataset's parquet files"),
  revision: nonEmpty().default('main').describe('The branch, tag or commit of a Hub dataset'),
  subset: positiveInteger().optional().describe('Use only the first N items'),
  holdout: count().default(0).describe('Items held out of training, to measure the adapters on (report)'),
  pipeline: pipelineSchema
    .default([])
    .describe('The image transforms, in order: Resize, a crop, a flip, ToTensor, Normalize (below)'),
});

const dataloader = section({
  batch_size: positiveInteger().default(1).describe('Items per iteration'),
  num_workers: z
    .int(expected('an integer in [0, 256]'))
    .min(0, expected('an integer in [0, 256]'))
    .max(256, expected('an integer in [0, 256]'))
    .default(0)
    .describe('Images decoded and transformed at once while preparing embeddings (0: one)'),
  sampler: section({
    type: oneOf(['DefaultSampler']).default('DefaultSampler').describe("mmengine's sampler: every item once per epoch"),
    shuffle: boolean()
      .default(true)
      .describe("A new order every epoch, drawn from the seed (else the dataset's order)"),
  }),
  dataset,
});

// ---- optimisation ----------------------------------------------------------------------------

const optimWrapper = section({
  type: oneOf(['OptimWrapper', 'AmpOptimWrapper'])
    .default('OptimWrapper')
    .describe('AmpOptimWrapper: mixed precision on CUDA when mixed_precision is unset'),
  dtype: oneOf(['float16', 'bfloat16', 'float32']).default('float16').describe("AmpOptimWrapper's type"),
  accumulative_counts: positiveInteger().default(1).describe('Iterations whose gradients add up per optimizer step'),
  optimizer: section({
    type: oneOf(['AdamW']).default('AdamW').describe('torch.optim.AdamW'),
    lr: positiveNumber().default(1e-4).describe('Base learning rate (the schedule scales it)'),
    weight_decay: z
      .number(expected('a number >= 0'))
      .nonnegative(expected('a number >= 0'))
      .default(1e-2)
      .describe("AdamW's decoupled weight decay"),
    betas: z
      .tuple([decay(), decay()], expected('two numbers in [0, 1)'))
      .default([0.9, 0.999])
      .describe("AdamW moments' decay rates"),
    eps: positiveNumber().default(1e-8).describe("AdamW's epsilon"),
  }),
  clip_grad: z
    .strictObject(
      { max_norm: positiveNumber().describe('The largest global gradient norm') },
      expected('an object or null'),
    )
    .nullable()
    .default(null)
    .describe('Clip the global gradient norm to max_norm'),
  max_consecutive_skips: positiveInteger()
    .default(20)
    .describe(
      'Optimizer steps in a row skipped for a non-finite loss or gradient before the run stops as diverged (fp16 overflows included)',
    ),
});

const schedule = section({
  type: oneOf(['constant', 'constant_with_warmup', 'linear', 'cosine'])
    .default('constant')
    .describe("diffusers' get_*_schedule_with_warmup, over optimizer steps"),
  warmup_iters: count().default(0).describe('Optimizer steps of linear warmup'),
});

const trainLoop = section({
  by_epoch: boolean().default(true).describe('Intervals of hooks count epochs (else iterations)'),
  max_epochs: positiveInteger().default(1).describe('Epochs to train, unless max_iters is set'),
  max_iters: positiveInteger().optional().describe('Iterations to train (instead of max_epochs)'),
});

const hooks = section({
  checkpoint: section({
    type: oneOf(['CheckpointHook']).default('CheckpointHook').describe('Checkpoints under work_dir/checkpoints'),
    interval: positiveInteger().default(1).describe('Epochs (or iterations) between checkpoints'),
    by_epoch: boolean().optional().describe('interval counts epochs, else iterations (default: train_cfg.by_epoch)'),
    max_keep_ckpts: positiveInteger().default(3).describe('Checkpoints kept (the newest)'),
    save_optimizer: boolean()
      .default(true)
      .describe("Keep AdamW's moments in checkpoints (without them a resumed run starts them at zero)"),
  }),
  logger: section({
    type: oneOf(['LoggerHook']).default('LoggerHook').describe('work_dir/log.jsonl and progress'),
    interval: positiveInteger().default(10).describe('Iterations between plain log lines (when not on a terminal)'),
  }),
});

const prompts = z
  .union([string(), strings().nonempty()], expected('a string or a non-empty array of strings'))
  .transform((p) => (Array.isArray(p) ? p : [p]));

/** diffengine's VisualizationHook: image embeddings of its prompts before training and every interval. */
const visualizationHook = z.strictObject({
  type: oneOf(['VisualizationHook']),
  prompt: prompts.describe('A prompt or a list of prompts'),
  height: pixels().default(768).describe('Image height in pixels'),
  width: pixels().default(768).describe('Image width in pixels'),
  guidance: number().default(4).describe('Classifier-free guidance scale'),
  interval: positiveInteger().default(1).describe('Epochs (or iterations) between samples'),
  by_epoch: boolean().default(true).describe('interval counts epochs (else iterations)'),
  on_cpu: boolean()
    .default(false)
    .describe(
      'Sample on the CPU too (skipped there otherwise: the real prior takes about 30 min a round at 768 px on 2 cores)',
    ),
});
export type VisualizationHookConfig = z.output<typeof visualizationHook>;

// ---- sampling --------------------------------------------------------------------------------

const sample = section({
  prompt: strings().nonempty(expected('a non-empty array of strings')).optional().describe('Prompts to sample'),
  negative_prompt: string().default('').describe('The unconditional prompt of classifier-free guidance'),
  num: upTo(1024).default(1).describe('Images per prompt (all prompts are sampled as one batch)'),
  guidance: number().default(4).describe('Classifier-free guidance scale'),
  height: pixels().default(1024).describe('Image height in pixels (latents: ceil(h / 42.67))'),
  width: pixels().default(1024).describe('Image width in pixels'),
  lora: nonEmpty().optional().describe('LoRA file or folder (diffusers or peft format); none: the base prior'),
  out: nonEmpty()
    .default('image_embeddings.safetensors')
    .describe('A .safetensors file of image embeddings, or a .png of the pictures (drawn by model.decoder_model)'),
  decoder_steps: upTo(1000).default(12).describe("The decoder's sampling steps (WuerstchenDecoderPipeline's default)"),
  decoder_guidance: number().default(0).describe("The decoder's classifier-free guidance scale (none at 1 or less)"),
});

// ---- the whole config ------------------------------------------------------------------------

const fields = z.strictObject({
  model,
  train_dataloader: dataloader,
  optim_wrapper: optimWrapper,
  lr_scheduler: schedule,
  train_cfg: trainLoop,
  default_hooks: hooks,
  custom_hooks: z
    .array(visualizationHook, expected('an array of hooks'))
    .default([])
    .describe('Hooks besides the default ones (below)'),
  work_dir: nonEmpty()
    .optional()
    .describe('Folder for checkpoints, logs and the LoRA file (default: work_dirs/<config name>)'),
  resume: nonEmpty()
    .optional()
    .describe("Resume from 'auto' (the work dir's latest checkpoint) or a checkpoint folder"),
  seed: count().default(0).describe('Seed of every random draw'),
  device: oneOf(DEVICES).default('cpu').describe('Backend to train and sample on'),
  mixed_precision: oneOf(['no', 'bf16', 'fp16'])
    .optional()
    .describe(
      "Frozen weights and GEMMs in bf16/fp16, as diffusers' --mixed_precision (default: from optim_wrapper, else no)",
    ),
  allow_tf32: boolean().default(false).describe("The GPU's fp32 GEMMs may round inputs to TF32"),
  cache_embeddings: boolean().default(true).describe("Keep the frozen encoders' outputs on disk"),
  report: z
    .strictObject({ draws: upTo(256).default(4).describe('Fixed-noise draws per item') }, expected('an object'))
    .optional()
    .describe('Write loss.png and report.md/json: the fixed-noise loss without and with the adapters'),
  sample,
});

/** Keys that resolve from others: alpha from r, the text encoder from the prior, the
 * checkpoint interval's unit from the loop's, the precision from diffengine's wrapper. */
export const configSchema = fields.transform((c) => ({
  ...c,
  model: {
    ...c.model,
    text_encoder_model: c.model.text_encoder_model ?? c.model.prior_model,
    text_encoder_revision:
      c.model.text_encoder_revision ?? (c.model.text_encoder_model ? 'main' : c.model.prior_revision),
    prior_lora_config: {
      ...c.model.prior_lora_config,
      lora_alpha: c.model.prior_lora_config.lora_alpha ?? c.model.prior_lora_config.r,
    },
  },
  default_hooks: {
    ...c.default_hooks,
    checkpoint: {
      ...c.default_hooks.checkpoint,
      by_epoch: c.default_hooks.checkpoint.by_epoch ?? c.train_cfg.by_epoch,
    },
  },
  mixed_precision: c.mixed_precision ?? ampPrecision(c.optim_wrapper, c.device),
}));

/** mmengine's AmpOptimWrapper autocasts on the GPU only; elsewhere it trains in fp32. */
function ampPrecision(
  wrapper: z.output<typeof optimWrapper>,
  device: (typeof DEVICES)[number],
): 'no' | 'bf16' | 'fp16' {
  if (wrapper.type !== 'AmpOptimWrapper' || device !== 'cuda') return 'no';
  return ({ float16: 'fp16', bfloat16: 'bf16', float32: 'no' } as const)[wrapper.dtype];
}

/** A config as the schema resolves it, work_dir still open (it defaults to the config's name). */
export type ParsedConfig = z.output<typeof configSchema>;
/** A config with every default filled in: what training reads and checkpoints record. */
export type LoraTrainConfig = Omit<ParsedConfig, 'work_dir'> & { work_dir: string };

type DeepPartial<T> = T extends readonly unknown[] ? T : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;
type Deletable<T> = T extends readonly unknown[]
  ? T
  : T extends object
    ? { [K in keyof T]?: Deletable<T[K]> } & { _delete_?: boolean }
    : T;
/** A config as written: any key may be left out (bases and defaults fill it), any dict may say
 * `_delete_: true` to replace its base's dict, and `_base_` names the files it inherits. */
export type ConfigInput = Deletable<DeepPartial<z.input<typeof fields>>> & { _base_?: string | string[] };

/** Keys diffengine configs carry that lora-train does not take, and why. */
export const UNSUPPORTED_KEYS: Record<string, string> = {
  'model.gradient_checkpointing':
    'lora-train keeps every activation in one planned arena and does not recompute them; remove the key',
  'train_dataloader.persistent_workers':
    'lora-train prepares data in its own process, with no workers to keep; remove the key',
  'train_cfg.type':
    "lora-train's loop counts epochs when train_cfg.by_epoch is true (EpochBasedTrainLoop) and iterations otherwise (IterBasedTrainLoop); set by_epoch and remove the key",
};

/** Every default, for library functions that take the same settings as the config. */
export const CONFIG_DEFAULTS: ParsedConfig = configSchema.parse({});
