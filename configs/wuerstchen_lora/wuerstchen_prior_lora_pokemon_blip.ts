import { defineConfig } from 'lora-train';

// diffengine's configs/wuerstchen_lora/wuerstchen_prior_lora_pokemon_blip.py: its
// VisualizationHook samples four image embeddings of "yoda pokemon" before training and after
// every epoch (saved under work_dir/vis_data/ for Würstchen's decoder).
export default defineConfig({
  _base_: [
    '../_base_/models/wuerstchen_prior_lora.ts',
    '../_base_/datasets/pokemon_blip_wuerstchen.ts',
    '../_base_/schedules/stable_diffusion_50e.ts',
  ],
  custom_hooks: [{ type: 'VisualizationHook', prompt: ['yoda pokemon', 'yoda pokemon', 'yoda pokemon', 'yoda pokemon'], height: 768, width: 768 }],
});
