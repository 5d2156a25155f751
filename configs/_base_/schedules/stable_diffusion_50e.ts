import { defineConfig } from 'lora-train';

// diffengine's _base_/schedules/stable_diffusion_50e.py: AdamW, clip at 1.0, 50 epochs,
// a checkpoint every epoch keeping the last 3.
export default defineConfig({
  optim_wrapper: {
    type: 'AmpOptimWrapper',
    dtype: 'float16',
    optimizer: { type: 'AdamW', lr: 1e-4, weight_decay: 1e-2 },
    clip_grad: { max_norm: 1.0 },
  },
  lr_scheduler: { type: 'constant', warmup_iters: 0 },
  train_cfg: { by_epoch: true, max_epochs: 50 },
  default_hooks: {
    checkpoint: { type: 'CheckpointHook', interval: 1, by_epoch: true, max_keep_ckpts: 3 },
    logger: { type: 'LoggerHook', interval: 10 },
  },
  seed: 0,
  cache_embeddings: true,
});
