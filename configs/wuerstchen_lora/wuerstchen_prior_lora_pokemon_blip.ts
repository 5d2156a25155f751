import { defineConfig } from 'lora-train';

// diffengine's configs/wuerstchen_lora/wuerstchen_prior_lora_pokemon_blip.py.
export default defineConfig({
  _base_: [
    '../_base_/models/wuerstchen_prior_lora.ts',
    '../_base_/datasets/pokemon_blip_wuerstchen.ts',
    '../_base_/schedules/stable_diffusion_50e.ts',
  ],
});
