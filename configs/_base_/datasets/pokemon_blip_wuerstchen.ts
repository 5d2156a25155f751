import { defineConfig } from 'lora-train';

// diffengine's _base_/datasets/pokemon_blip_wuerstchen.py: 768 px crops, horizontal flips,
// ImageNet normalisation (what the EfficientNet encoder was trained with).
export default defineConfig({
  train_dataloader: {
    batch_size: 8,
    num_workers: 4,
    sampler: { type: 'DefaultSampler', shuffle: true },
    dataset: {
      type: 'HFDataset',
      dataset: 'lambdalabs/pokemon-blip-captions',
      image_column: 'image',
      caption_column: 'text',
      pipeline: [
        { type: 'torchvision/Resize', size: 768, interpolation: 'bilinear' },
        { type: 'RandomCrop', size: 768 },
        { type: 'RandomHorizontalFlip', p: 0.5 },
        { type: 'torchvision/ToTensor' },
        { type: 'torchvision/Normalize', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
        { type: 'PackInputs' },
      ],
    },
  },
});
