// A shortened run of the README's first command: the built-in tiny Würstchen on the Twemoji
// dataset, built from npm packages on first use, with nothing downloaded.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { emojiCaption } from '../src/data/twemoji.js';

describe('embedded default', () => {
  it('captions emoji from their label and tags', () => {
    expect(
      emojiCaption({
        label: 'dog face',
        hexcode: '1F436',
        tags: ['adorbs', 'animal', 'dog', 'face', 'pet', 'puppies', 'puppy'],
      }),
    ).toBe('an emoji of a dog face, adorbs, animal, pet');
    expect(emojiCaption({ label: 'flag: Japan', hexcode: '1F1EF-1F1F5', tags: ['JP'] })).toBe(
      'an emoji of the flag of Japan, JP',
    );
  });

  it('trains the tiny model on Twemoji and reports a lower held-out loss with the LoRA', async () => {
    const home = mkdtempSync(join(tmpdir(), 'lora-train-demo-'));
    const workDir = join(home, 'run');
    const r = spawnSync(
      process.execPath,
      [
        join(import.meta.dirname, '..', 'bin', 'lora-train.js'),
        '--config',
        'twemoji_tiny_wuerstchen',
        '--work-dir',
        workDir,
        '--cfg-options',
        'train_dataloader.dataset.subset=256',
        'train_dataloader.dataset.holdout=32',
        'train_cfg.max_epochs=3',
        'lr_scheduler.type=constant',
      ],
      {
        encoding: 'utf8',
        env: { ...process.env, LORA_TRAIN_HOME: home, LORA_TRAIN_CACHE: join(home, 'cache') },
        timeout: 300_000,
      },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/twemoji dataset \[#+\] \d+\/\d+/);
    expect(r.stdout).toContain('finished after 42 iterations');
    const dataset = readFileSync(join(home, 'datasets', 'twemoji-15.0.0-128px', 'metadata.jsonl'), 'utf8')
      .trim()
      .split('\n');
    expect(dataset.length).toBeGreaterThan(3500);
    for (const file of ['pytorch_lora_weights.safetensors', 'log.jsonl', 'report.md', 'loss.png'])
      expect(existsSync(join(workDir, file)), file).toBe(true);
    const report = JSON.parse(readFileSync(join(workDir, 'report.json'), 'utf8')) as {
      evaluation: { before: number; after: number; heldOut: boolean };
    };
    expect(report.evaluation.heldOut).toBe(true);
    expect(report.evaluation.after).toBeLessThan(report.evaluation.before);
    // The VisualizationHook's pictures: before training and at the end, two 128 px prompts a row.
    const last = join(workDir, 'vis_data', 'iter_42.png');
    for (const f of [join(workDir, 'vis_data', 'iter_0.png'), last]) expect(existsSync(f), f).toBe(true);
    expect(await sharp(last).metadata()).toMatchObject({ format: 'png', width: 256, height: 128 });
    expect(readFileSync(join(workDir, 'report.md'), 'utf8')).toContain('![samples](vis_data/iter_42.png)');
    return sharp(join(workDir, 'loss.png'))
      .metadata()
      .then((m) => {
        expect(m.format).toBe('png');
        expect(m.width).toBeGreaterThan(300);
      });
  }, 300_000);
});
