import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseOverride } from '../src/config/load.js';
import { configReference } from '../src/config/reference.js';
import { resolveConfig } from '../src/config/validate.js';
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
    expect(config.optim_wrapper.type).toBe('OptimWrapper'); // diffengine replaces the schedule's AmpOptimWrapper
    expect(config.mixed_precision).toBe('no');
    expect(config.work_dir).toBe(join('work_dirs', 'wuerstchen_prior_lora_pokemon_blip'));
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
    // replaced whole: the base's pipeline is gone, the defaults fill the rest
    expect(config.train_dataloader.dataset).toMatchObject({
      dataset: 'some/dataset',
      caption_column: 'caption',
      pipeline: [],
    });
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
    expect(config.mixed_precision).toBe('bf16');
    const precision = (raw: object) => resolveConfig(raw, new Map()).mixed_precision;
    const amp = (dtype?: string) => ({ type: 'AmpOptimWrapper', ...(dtype ? { dtype } : {}) });
    expect(precision({ mixed_precision: 'no', device: 'cuda', optim_wrapper: amp() })).toBe('no');
    expect(precision({ device: 'cuda', optim_wrapper: amp() })).toBe('fp16'); // mmengine's default dtype
    expect(precision({ device: 'cuda', optim_wrapper: amp('bfloat16') })).toBe('bf16');
    expect(precision({ device: 'cpu', optim_wrapper: amp('bfloat16') })).toBe('no');
    expect(precision({ device: 'cuda' })).toBe('no');
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

describe('the schema as data', () => {
  it('docs/config.md is the reference the schema writes (npm run docs:config)', () => {
    expect(readFileSync(join(import.meta.dirname, '..', 'docs', 'config.md'), 'utf8')).toBe(configReference());
  });

  it('fills every default, and resolves keys that default to others', async () => {
    const { config } = await loadConfig(join(dir, 'user_config.ts'), ['model.prior_lora_config.r=4']);
    expect(config.model.prior_lora_config).toMatchObject({ r: 4, lora_alpha: 4, lora_dropout: 0 });
    expect(config.default_hooks.checkpoint.by_epoch).toBe(true); // the schedule's own
    const byIteration = resolveConfig({ train_cfg: { by_epoch: false } }, new Map());
    expect(byIteration.default_hooks.checkpoint.by_epoch).toBe(false); // unset: train_cfg's
    expect(config.train_dataloader.sampler).toEqual({ type: 'DefaultSampler', shuffle: true });
    expect(config.sample).toMatchObject({ num: 1, guidance: 4, height: 1024, width: 1024, negative_prompt: '' });
    expect(resolveConfig({ model: { prior_model: 'a/b' } }, new Map()).model.text_encoder_model).toBe('a/b');
  });

  it('names keys lora-train does not take, and why', async () => {
    await expect(
      loadConfig(join(dir, 'user_config.ts'), [
        'model.gradient_checkpointing=true',
        'train_dataloader.persistent_workers=true',
      ]),
    ).rejects.toThrow(
      new ConfigError(
        [
          "--cfg-options model.gradient_checkpointing=true: 'model.gradient_checkpointing' is not supported: lora-train keeps every activation in one planned arena and does not recompute them; remove the key",
          "--cfg-options train_dataloader.persistent_workers=true: 'train_dataloader.persistent_workers' is not supported: lora-train prepares data in its own process, with no workers to keep; remove the key",
        ].join('\n'),
      ),
    );
  });

  it('checks hooks and transforms by their type, naming the item', async () => {
    await expect(loadConfig(join(dir, 'user_config.ts'), ['custom_hooks=[{"type": "PeftSaveHook"}]'])).rejects.toThrow(
      `--cfg-options custom_hooks=[{"type": "PeftSaveHook"}]: 'custom_hooks[0].type' must be one of "VisualizationHook", got "PeftSaveHook"`,
    );
    await expect(
      loadConfig(join(dir, 'user_config.ts'), [
        'custom_hooks=[{"type": "VisualizationHook", "prompt": "a", "heigth": 64}]',
      ]),
    ).rejects.toThrow(`'custom_hooks[0].heigth'`);
    await expect(
      loadConfig(join(dir, 'user_config.ts'), ['train_dataloader.dataset.pipeline=[{"type": "RandomCrop"}]']),
    ).rejects.toThrow(`'train_dataloader.dataset.pipeline[0].size' is required`);
  });

  it('takes a command-line flag as its config key, named by the flag in errors', async () => {
    const { config } = await loadConfig(join(dir, 'user_config.ts'), [{ key: 'seed', value: 7, origin: '--seed' }]);
    expect(config.seed).toBe(7);
    for (const bad of [-1, 1.5, Number.NaN])
      await expect(
        loadConfig(join(dir, 'user_config.ts'), [{ key: 'seed', value: bad, origin: '--seed' }]),
      ).rejects.toThrow(`--seed: 'seed' must be an integer >= 0, got ${Number.isNaN(bad) ? 'NaN' : bad}`);
  });
});

describe('configs that would run code or never end', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'lora-train-config-'));
  const write = (name: string, text: string) => {
    writeFileSync(join(scratch, name), text);
    return join(scratch, name);
  };
  const marker = join(scratch, 'ran');
  const payload = `import { writeFileSync } from 'node:fs'; writeFileSync(${JSON.stringify(marker)}, 'x'); export default {};`;

  it('a JSON config inherits from no program but the shipped configs, and no config file lacks an extension', async () => {
    write('payload', payload);
    write('payload.mjs', payload);
    for (const base of ['payload', 'payload.mjs']) {
      const json = write(`on-${base}.json`, JSON.stringify({ _base_: [base] }));
      await expect(loadConfig(json)).rejects.toThrow(
        `${json}: _base_ '${base}' is a program (${base.endsWith('.mjs') ? '.mjs' : 'no extension'}); a JSON config inherits only from JSON files and shipped configs`,
      );
    }
    const ts = write('on-payload.mjs', `export default { _base_: ['payload'] };`);
    await expect(loadConfig(ts)).rejects.toThrow(
      `${join(scratch, 'payload')}: a config file ends in .ts, .js, .mjs, .json`,
    );
    expect(existsSync(marker)).toBe(false);
    const shipped = join(fixturesDir, '..', '..', 'configs', 'demo', 'twemoji_tiny_wuerstchen.ts');
    const onShipped = write('on-shipped.json', JSON.stringify({ _base_: [shipped], seed: 5 }));
    expect((await loadConfig(onShipped)).config.seed).toBe(5);
  });

  it('names the file of a config nested past reason or containing itself', async () => {
    const deep = write('deep.json', `{"train_cfg": ${'['.repeat(20000)}${']'.repeat(20000)}}`);
    await expect(loadConfig(deep)).rejects.toThrow(deep);
    const cycle = write('cycle.mjs', 'const c = { train_cfg: {} }; c.train_cfg.self = c; export default c;');
    await expect(loadConfig(cycle)).rejects.toThrow(`${cycle}: 'train_cfg.self.train_cfg.self`);
  });
});
