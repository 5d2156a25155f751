import { defineConfig } from 'lora-train';

// The embedded default: a tiny Würstchen stack with RANDOM weights (made from a seed on first
// use) fine-tuned on ~3,600 Twemoji pictures captioned from emojibase. It runs every code path a
// real fine-tune runs, on 2 CPU cores in a few minutes, with nothing to download. Real
// fine-tunes use warp-ai/wuerstchen-prior (see wuerstchen_lora/wuerstchen_prior_lora_pokemon_blip).
export default defineConfig({
  model: {
    prior_model: 'builtin:tiny-wuerstchen',
    image_encoder: { path: 'builtin:tiny-wuerstchen' },
    decoder_model: 'builtin:tiny-wuerstchen',
    prior_lora_config: {
      type: 'LoRA',
      r: 8,
      lora_alpha: 8,
      target_modules: ['to_q', 'to_k', 'to_v', 'to_out.0', 'kv_mapper.1', 'channelwise.0', 'channelwise.4'],
    },
  },
  train_dataloader: {
    batch_size: 16,
    dataset: {
      type: 'HFDataset',
      dataset: 'builtin:twemoji',
      caption_column: 'text',
      holdout: 64,
      pipeline: [
        { type: 'torchvision/Resize', size: 128, interpolation: 'bilinear' },
        { type: 'CenterCrop', size: 128 },
        { type: 'RandomHorizontalFlip', p: 0.5 },
        { type: 'torchvision/ToTensor' },
        { type: 'torchvision/Normalize', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
        { type: 'PackInputs' },
      ],
    },
  },
  optim_wrapper: { optimizer: { type: 'AdamW', lr: 1e-3, weight_decay: 1e-2 }, clip_grad: { max_norm: 1.0 } },
  lr_scheduler: { type: 'cosine', warmup_iters: 20 },
  train_cfg: { by_epoch: true, max_epochs: 2 },
  default_hooks: { checkpoint: { interval: 1, by_epoch: true, max_keep_ckpts: 2 }, logger: { interval: 50 } },
  // Pictures of two prompts before training and after each epoch (vis_data/, and the report):
  // noise, as the tiny decoder and VQGAN are random.
  custom_hooks: [
    {
      type: 'VisualizationHook',
      prompt: ['an emoji of a red heart', 'an emoji of a cat face'],
      height: 128,
      width: 128,
      on_cpu: true,
    },
  ],
  seed: 0,
  cache_embeddings: true,
  report: { draws: 4 },
});
