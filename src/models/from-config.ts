// The models a config names: the prior (with fresh LoRA adapters), the tokenizer and text
// encoder, and the image encoder, from the built-in tiny stack, a folder, or the local Hugging
// Face cache, on the config's device and in its precision.
import { extname, join } from 'node:path';
import { type LoadedConfig, required } from '../config/load.js';
import { resolveRepo, resolveRepoFile } from '../hub/cache.js';
import { setAllowTf32 } from '../native/ops.js';
import { Decoder } from './decoder.js';
import { VQGAN } from './vqgan.js';
import { EFFICIENTNET_V2_S, ImageEncoder, type ImageEncoderConfig } from './image-encoder.js';
import { type Precision, type Prior, loadPrior } from './prior.js';
import { TextEncoder } from './text-encoder.js';
import { TINY_MODEL_ID, tinyModel } from './tiny.js';
import { ClipTokenizer } from './tokenizer.js';
import { componentFolder, readJsonConfig, weightFiles } from './weights.js';

/** The precision of the frozen weights and GEMMs ('no' mixed precision: fp32). */
export function precisionOf({ config }: LoadedConfig): Precision {
  return config.mixed_precision === 'no' ? 'fp32' : config.mixed_precision;
}

/** A model id as a folder: the built-in stack, a local folder, or a Hub snapshot in the cache. */
async function snapshotOf(id: string, revision: string): Promise<string> {
  return id === TINY_MODEL_ID ? tinyModel() : resolveRepo(id, 'model', revision);
}

export interface TextModels {
  prior: Prior;
  tokenizer: ClipTokenizer;
  textEncoder: TextEncoder;
  /** The files the text encoder's outputs depend on (config, weights, tokenizer). */
  textFiles: string[];
}

/** The prior with fresh adapters from the config (lora_A from the seed), and the text side. */
export async function loadTextModels(loaded: LoadedConfig): Promise<TextModels> {
  const { config, file } = loaded;
  const { device, seed } = config;
  const priorSnapshot = await snapshotOf(
    required(config.model.prior_model, 'model.prior_model', file),
    config.model.prior_revision,
  );
  const lora = config.model.prior_lora_config;
  const prior = await loadPrior(priorSnapshot, {
    device,
    precision: precisionOf(loaded),
    lora: { rank: lora.r, alpha: lora.lora_alpha, targets: lora.target_modules, dropout: lora.lora_dropout, seed },
  }).catch((e: unknown) => {
    // The adapters' checks speak of addLora's options; the user wrote model.prior_lora_config.
    const ours = e instanceof Error && /^(addLora|LoRA): /.exec(e.message);
    if (ours)
      throw new RangeError(
        `${file}: model.prior_lora_config: ${e.message.slice(ours[0].length).replace('lora.rank', 'r')}`,
      );
    throw e;
  });
  const textSnapshot = await snapshotOf(
    config.model.text_encoder_model ?? priorSnapshot,
    config.model.text_encoder_revision ?? config.model.prior_revision,
  );
  const tokenizer = ClipTokenizer.load(textSnapshot);
  const textEncoder = TextEncoder.load(textSnapshot, { device });
  if (textEncoder.config.hidden !== prior.config.c_cond)
    throw new Error(
      `the text encoder's hidden size ${textEncoder.config.hidden} differs from the prior's c_cond ${prior.config.c_cond}`,
    );
  const textFolder = componentFolder(textSnapshot, 'text_encoder');
  const textFiles = [
    join(textFolder, 'config.json'),
    ...weightFiles(textFolder, 'model'),
    join(componentFolder(textSnapshot, 'tokenizer', 'tokenizer.json'), 'tokenizer.json'),
  ];
  return { prior, tokenizer, textEncoder, textFiles };
}

/** The EfficientNet encoder a config names: the built-in tiny one, a file (.safetensors, or a
 * .pt read safely under `key`), or a file of a Hub repository in the local cache. */
export async function loadImageEncoder(
  loaded: LoadedConfig,
): Promise<{ imageEncoder: ImageEncoder; weightFile: string }> {
  const { config, file } = loaded;
  const ie = config.model.image_encoder;
  const builtin = ie.path === TINY_MODEL_ID ? join(await tinyModel(), 'image_encoder') : undefined;
  const weightFile = builtin
    ? join(builtin, 'effnet.safetensors')
    : (ie.path ??
      resolveRepoFile(
        required(ie.repo, 'model.image_encoder.path (or repo and file)', file),
        required(ie.file, 'model.image_encoder.file', file),
        'model',
        ie.revision,
      ));
  const configFile = builtin ? join(builtin, 'config.json') : ie.config;
  const encoderConfig = configFile
    ? (readJsonConfig(configFile, 'image encoder') as unknown as ImageEncoderConfig)
    : EFFICIENTNET_V2_S;
  const options = { device: config.device };
  try {
    const imageEncoder =
      extname(weightFile) === '.pt'
        ? ImageEncoder.loadCheckpoint(weightFile, ie.key, encoderConfig, options)
        : ImageEncoder.load(weightFile, encoderConfig, options);
    return { imageEncoder, weightFile };
  } catch (e) {
    // The native model's checks of the layout know nothing of the file it came from.
    if (configFile && /^(image encoder config|ImageEncoder)\b/.test((e as Error).message))
      throw new Error(`${configFile}: ${(e as Error).message}`, { cause: e });
    throw e;
  }
}

export interface PictureModels {
  decoder: Decoder;
  vqgan: VQGAN;
  /** The decoder snapshot's own tokenizer and text encoder. */
  tokenizer: ClipTokenizer;
  textEncoder: TextEncoder;
}

/** The decoder snapshot a config names (model.decoder_model), checked against the prior whose
 * image embeddings it draws (effnet_embd = the prior's c_in). */
export async function loadPictureModels(loaded: LoadedConfig, prior: Prior): Promise<PictureModels> {
  const { config, file } = loaded;
  const snapshot = await snapshotOf(
    required(config.model.decoder_model, 'model.decoder_model', file),
    config.model.decoder_revision,
  );
  const device = config.device;
  const decoder = Decoder.load(snapshot, { device, precision: precisionOf(loaded) });
  const vqgan = VQGAN.load(snapshot, { device });
  const tokenizer = ClipTokenizer.load(snapshot);
  const textEncoder = TextEncoder.load(snapshot, { device });
  const mismatch = (what: string) => new Error(`${file}: model.decoder_model ${config.model.decoder_model}: ${what}`);
  if (decoder.config.effnet_embd !== prior.config.c_in)
    throw mismatch(
      `the decoder's effnet_embd ${decoder.config.effnet_embd} differs from the prior's c_in ${prior.config.c_in}`,
    );
  if (decoder.config.clip_embd !== textEncoder.config.hidden)
    throw mismatch(
      `the decoder's clip_embd ${decoder.config.clip_embd} differs from its text encoder's ${textEncoder.config.hidden}`,
    );
  if (vqgan.config.latent_channels !== decoder.config.c_out)
    throw mismatch(
      `the VQGAN's ${vqgan.config.latent_channels} latent channels differ from the decoder's c_out ${decoder.config.c_out}`,
    );
  return { decoder, vqgan, tokenizer, textEncoder };
}

/** Every model training needs, on the config's device, checked against each other. */
export async function loadTrainingModels(loaded: LoadedConfig, log: (line: string) => void) {
  const models = await loadTextModels(loaded);
  const { prior } = models;
  const { device, allow_tf32: allowTf32 } = loaded.config;
  setAllowTf32(allowTf32, { device });
  if (prior.precision !== 'fp32') {
    const scaling = prior.precision === 'fp16' ? ', dynamic loss scaling' : '';
    log(
      `lora-train: mixed precision ${prior.precision} (frozen weights and GEMM operands; LoRA weights, gradients and AdamW state fp32${scaling})`,
    );
  }
  const { imageEncoder, weightFile } = await loadImageEncoder(loaded);
  const latents = imageEncoder.config.latent_channels;
  if (latents !== prior.config.c_in)
    throw new Error(`the image encoder's ${latents} latent channels differ from the prior's c_in ${prior.config.c_in}`);
  return { ...models, imageEncoder, imageFiles: [weightFile] };
}
