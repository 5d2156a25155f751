// diffengine's VisualizationHook: image embeddings of the hook's prompts before training and
// every `interval` epochs (or iterations) and at the end, saved as
// work_dir/vis_data/iter_N.safetensors, and drawn into work_dir/vis_data/iter_N.png (a row of
// pictures) when the config names a decoder (model.decoder_model).
import { join } from 'node:path';
import { NonFiniteError } from '../core/finite.js';
import type { LoraTrainConfig, VisualizationHookConfig } from '../config/schema.js';
import type { PictureModels, TextModels } from '../models/from-config.js';
import { generateEmbeddings, saveEmbeddings } from '../sample/generate.js';
import { decoderSettings, drawFromEmbeddings, writePictureGrid } from '../sample/pictures.js';
import type { TrainingPlan } from './plan.js';

/** The hooks that run on the config's device: on the CPU a round of samples at the real size takes
 * half an hour, so there only those that ask for it. */
export function activeHooks(config: LoraTrainConfig): VisualizationHookConfig[] {
  return config.device === 'cpu' ? config.custom_hooks.filter((h) => h.on_cpu) : config.custom_hooks;
}

export class Visualization {
  private readonly hooks: VisualizationHookConfig[];
  private pictureModels?: Promise<PictureModels>;

  /** `pictures` loads the decoder and VQGAN (once, at the first round), when there are any. */
  constructor(
    private readonly models: TextModels,
    private readonly config: LoraTrainConfig,
    private readonly plan: TrainingPlan,
    private readonly log: (line: string) => void,
    private readonly pictures?: () => Promise<PictureModels>,
  ) {
    this.hooks = activeHooks(config);
    const skipped = config.custom_hooks.length - this.hooks.length;
    if (skipped)
      log(
        `lora-train: warning: VisualizationHook skipped on the CPU (${skipped} hook${skipped > 1 ? 's' : ''}): sampling there takes about 30 min a round at the real size; set on_cpu: true in the hook to sample anyway`,
      );
  }

  /** Samples every hook due after iteration `it` (0: before training). */
  async after(it: number): Promise<void> {
    for (const [i, hook] of this.hooks.entries()) {
      const due =
        it === 0 || it === this.plan.totalIters || it % this.plan.iterations(hook.interval, hook.by_epoch) === 0;
      if (due) await this.sample(hook, `iter_${it}${this.hooks.length > 1 ? `_hook${i}` : ''}`);
    }
  }

  private async sample(hook: VisualizationHookConfig, label: string): Promise<void> {
    const { prior, tokenizer, textEncoder } = this.models;
    const settings = { height: hook.height, width: hook.width, guidance: hook.guidance, seed: this.config.seed };
    const options = { prompts: hook.prompt, num: 1, negativePrompt: '', ...settings };
    const { embeddings, prompts } = await generateEmbeddings(prior, tokenizer, textEncoder, options);
    try {
      saveEmbeddings(join(this.config.work_dir, 'vis_data', `${label}.safetensors`), embeddings, prompts, settings);
    } catch (e) {
      // Samples of diverged adapters are not written; the optimizer decides whether the run goes on.
      if (!(e instanceof NonFiniteError)) throw e;
      this.log(`lora-train: warning: samples ${label} not written: ${e.message}`);
      return;
    }
    if (!this.pictures) return;
    this.pictureModels ??= this.pictures();
    const drawn = await drawFromEmbeddings(await this.pictureModels, embeddings, {
      prompts,
      negativePrompt: '',
      ...decoderSettings(this.config),
    });
    await writePictureGrid(join(this.config.work_dir, 'vis_data', `${label}.png`), drawn, prompts.length);
  }
}
