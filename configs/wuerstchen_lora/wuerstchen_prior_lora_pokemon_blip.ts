import { defineConfig } from 'lora-train';

// diffengine's configs/wuerstchen_lora/wuerstchen_prior_lora_pokemon_blip.py: its
// VisualizationHook samples four image embeddings of "yoda pokemon" before training and after
// every epoch (saved under work_dir/vis_data/ for Würstchen's decoder). Like diffengine it
// replaces the schedule's AmpOptimWrapper, so it trains in fp32; on a GPU add
// `--cfg-options mixed_precision=bf16` for bf16 weights and GEMMs (diffusers' --mixed_precision).
export default defineConfig({
  _base_: [
    '../_base_/models/wuerstchen_prior_lora.ts',
    '../_base_/datasets/pokemon_blip_wuerstchen.ts',
    '../_base_/schedules/stable_diffusion_50e.ts',
  ],
  optim_wrapper: {
    _delete_: true,
    optimizer: { type: 'AdamW', lr: 1e-4, weight_decay: 1e-2 },
    clip_grad: { max_norm: 1.0 },
  },
  custom_hooks: [
    {
      type: 'VisualizationHook',
      prompt: ['yoda pokemon', 'yoda pokemon', 'yoda pokemon', 'yoda pokemon'],
      height: 768,
      width: 768,
    },
  ],
});
