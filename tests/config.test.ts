import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseOverride } from '../src/config/load.js';
import { trainingPrecision } from '../src/models/from-config.js';
import { lrFactor } from '../src/train/schedule.js';
import { fixturesDir } from './helpers.js';

const dir = join(fixturesDir, 'configs');

describe('configs', () => {
  it('resolves a shipped config by name and merges its _base_ files with the seed values', async () => {
    const { config, name } = await loadConfig('wuerstchen_prior_lora_pokemon_blip');
    expect(name).toBe('wuerstchen_prior_lora_pokemon_blip');
    expect(config.train_dataloader?.batch_size).toBe(8);
    expect(config.train_cfg?.max_epochs).toBe(50);
    expect(config.model?.prior_lora_config).toMatchObject({
      r: 8,
      lora_alpha: 8,
      target_modules: ['to_q', 'to_k', 'to_v', 'to_out.0'],
    });
    expect(config.optim_wrapper?.optimizer).toMatchObject({ lr: 1e-4, weight_decay: 1e-2 });
    expect(config.optim_wrapper?.clip_grad?.max_norm).toBe(1);
    expect(config.optim_wrapper?.type).toBeUndefined(); // diffengine replaces the schedule's AmpOptimWrapper
    expect(trainingPrecision(config, 'cuda')).toBe('fp32');
    expect(config.train_dataloader?.dataset?.pipeline?.map((t) => t.type)).toEqual([
      'torchvision/Resize',
      'RandomCrop',
      'RandomHorizontalFlip',
      'torchvision/ToTensor',
      'torchvision/Normalize',
      'PackInputs',
    ]);
  });

  it('loads a user TypeScript config with defineConfig: deep merge, _delete_, overrides', async () => {
    const { config } = await loadConfig(join(dir, 'user_config.ts'), [
      'train_dataloader.batch_size=2',
      'model.prior_lora_config.target_modules=to_q,to_v',
    ]);
    expect(config.optim_wrapper?.optimizer).toMatchObject({ type: 'AdamW', lr: 5e-5, weight_decay: 1e-2 }); // merged key by key
    expect(config.train_cfg).toEqual({ by_epoch: false, max_epochs: 50, max_iters: 300 });
    expect(config.train_dataloader?.dataset).toEqual({ dataset: 'some/dataset', caption_column: 'caption' }); // replaced whole
    expect(config.train_dataloader?.batch_size).toBe(2);
    expect(config.model?.prior_lora_config?.target_modules).toEqual(['to_q', 'to_v']);
  });

  it('names the key, the file and a likely fix for unknown keys and wrong types', async () => {
    await expect(loadConfig(join(dir, 'typo.json'))).rejects.toThrow(
      new ConfigError(
        `${join(dir, 'typo.json')}: unknown key 'train_dataloader.dataset.caption_colum' (did you mean 'train_dataloader.dataset.caption_column'?)`,
      ),
    );
    await expect(loadConfig(join(dir, 'user_config.ts'), ['train_cfg.max_iters=many'])).rejects.toThrow(
      '--cfg-options train_cfg.max_iters=many: \'train_cfg.max_iters\' must be a positive integer, got "many"',
    );
    await expect(loadConfig(join(dir, 'user_config.ts'), ['lr_scheduler.type=exponential'])).rejects.toThrow(
      `'lr_scheduler.type' must be one of "constant", "constant_with_warmup", "linear", "cosine", got "exponential"`,
    );
    await expect(loadConfig('no_such_config')).rejects.toThrow(
      /no config file 'no_such_config' and no shipped config of that name \(shipped: .*wuerstchen_prior_lora_pokemon_blip/,
    );
  });

  it('chooses the precision from mixed_precision, else an AmpOptimWrapper on CUDA', async () => {
    const { config } = await loadConfig('wuerstchen_prior_lora_pokemon_blip', ['mixed_precision=bf16']);
    expect(trainingPrecision(config, 'cuda')).toBe('bf16');
    expect(trainingPrecision(config, 'cpu')).toBe('bf16');
    expect(trainingPrecision({ mixed_precision: 'no', optim_wrapper: { type: 'AmpOptimWrapper' } }, 'cuda')).toBe(
      'fp32',
    );
    expect(trainingPrecision({ optim_wrapper: { type: 'AmpOptimWrapper' } }, 'cuda')).toBe('fp16'); // mmengine's default dtype
    expect(trainingPrecision({ optim_wrapper: { type: 'AmpOptimWrapper', dtype: 'bfloat16' } }, 'cuda')).toBe('bf16');
    expect(trainingPrecision({ optim_wrapper: { type: 'AmpOptimWrapper', dtype: 'bfloat16' } }, 'cpu')).toBe('fp32');
    await expect(loadConfig('wuerstchen_prior_lora_pokemon_blip', ['mixed_precision=fp8'])).rejects.toThrow(
      `'mixed_precision' must be one of "no", "bf16", "fp16", got "fp8"`,
    );
  });

  it('parses --cfg-options values as JSON, lists, or strings', () => {
    expect(parseOverride('a.b=3')).toEqual([['a', 'b'], 3]);
    expect(parseOverride('a=true')).toEqual([['a'], true]);
    expect(parseOverride('a=x,y')).toEqual([['a'], ['x', 'y']]);
    expect(parseOverride('a=[1, 2]')).toEqual([['a'], [1, 2]]);
    expect(parseOverride('a=None')).toEqual([['a'], null]);
    expect(parseOverride('a.b=hello')).toEqual([['a', 'b'], 'hello']);
    expect(() => parseOverride('novalue')).toThrow('expected key.path=value');
  });
});

describe('learning-rate schedules (diffusers semantics)', () => {
  it('constant, with warmup, linear and cosine', () => {
    expect([0, 5, 99].map((k) => lrFactor('constant', k, 100, 10))).toEqual([1, 1, 1]);
    expect([0, 5, 10, 50].map((k) => lrFactor('constant_with_warmup', k, 100, 10))).toEqual([0, 0.5, 1, 1]);
    expect([0, 5, 10, 55, 100].map((k) => lrFactor('linear', k, 100, 10))).toEqual([0, 0.5, 1, 0.5, 0]);
    expect(lrFactor('cosine', 10, 100, 10)).toBe(1);
    expect(lrFactor('cosine', 55, 100, 10)).toBeCloseTo(0.5, 12);
    expect(lrFactor('cosine', 100, 100, 10)).toBeCloseTo(0, 12);
  });
});
