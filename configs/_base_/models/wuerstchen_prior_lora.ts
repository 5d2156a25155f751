import { defineConfig } from 'lora-train';

// diffengine's _base_/models/wuerstchen_prior_lora.py: the Würstchen v2 prior with LoRA on the
// attention projections; the image encoder is the EfficientNet in dome272/wuerstchen's
// model_v2_stage_b.pt, as diffusers' train_text_to_image_lora_prior.py loads it; pictures are
// drawn by warp-ai/wuerstchen's decoder and VQGAN, as diffengine's decoder_model.
export default defineConfig({
  model: {
    type: 'WuerstchenPriorModel',
    prior_model: 'warp-ai/wuerstchen-prior',
    image_encoder: { repo: 'dome272/wuerstchen', file: 'model_v2_stage_b.pt', key: 'effnet_state_dict' },
    decoder_model: 'warp-ai/wuerstchen',
    prior_lora_config: {
      type: 'LoRA',
      r: 8,
      lora_alpha: 8,
      target_modules: ['to_q', 'to_k', 'to_v', 'to_out.0'],
      lora_dropout: 0,
    },
  },
});
