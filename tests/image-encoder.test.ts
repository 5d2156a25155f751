// The native EfficientNet encoder against torchvision (tests/reference/image_encoder_fixtures.py):
// a width-reduced efficientnet_v2 with random batch-norm statistics, and the full v2_s key set.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EFFICIENTNET_V2_S, ImageEncoder, type ImageEncoderConfig, expectedKeys } from '../src/models/image-encoder.js';
import { getTensor, readSafetensors } from '../src/io/safetensors.js';
import { TOLERANCE } from './cases/index.js';
import { expectClose, fixturesDir } from './helpers.js';

const dir = join(fixturesDir, 'image_encoder');
const tinyConfig = JSON.parse(readFileSync(join(dir, 'tiny_effnet.config.json'), 'utf8')) as ImageEncoderConfig;
const ref = readSafetensors(join(dir, 'reference.safetensors'));

describe('image encoder', () => {
  it('expects exactly the state-dict keys and shapes of efficientnet_v2_s + mapper', () => {
    const torchvision = JSON.parse(readFileSync(join(dir, 'effnet_v2_s_keys.json'), 'utf8')) as Record<
      string,
      number[]
    >;
    const ours = Object.fromEntries(expectedKeys(EFFICIENTNET_V2_S));
    expect(Object.keys(ours).sort()).toEqual(Object.keys(torchvision).sort());
    expect(ours).toEqual(torchvision);
  });

  it('equals torchvision in eval mode, batch norms folded', async () => {
    const encoder = ImageEncoder.load(join(dir, 'tiny_effnet.safetensors'), tinyConfig);
    expectClose('latents', await encoder.encode(getTensor(ref, 'images')), getTensor(ref, 'out'), TOLERANCE.encoder);
  });

  it('refuses weights that do not fit, and image sizes that are not multiples of 32', async () => {
    expect(() => ImageEncoder.load(join(dir, 'tiny_effnet.safetensors'))).toThrow(
      /the weights do not fit the EfficientNet encoder config[\s\S]*missing tensor backbone\.1\.1\.block\.0\.0\.weight \[24, 24, 3, 3\]/,
    );
    const encoder = ImageEncoder.load(join(dir, 'tiny_effnet.safetensors'), tinyConfig);
    await expect(encoder.encode({ data: new Float32Array(3 * 40 * 64), shape: [1, 3, 40, 64] })).rejects.toThrow(
      'encodeImages: Expected image sides that are multiples of 32 for images.shape but received [1, 3, 40, 64]',
    );
  });
});
