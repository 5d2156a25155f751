// The picture models as backend cases: the decoder (Stage B) and the VQGAN of each fixture
// (tests/reference/decoder_fixtures.py, vqgan_fixtures.py) on a device, with diffusers'
// float64 results as the references.
import { join } from 'node:path';
import type { Device } from '../../src/core/device.js';
import { getTensor, readSafetensors } from '../../src/io/safetensors.js';
import { Decoder } from '../../src/models/decoder.js';
import { VQGAN } from '../../src/models/vqgan.js';
import type { OpCase } from './ops.js';
import { TOLERANCE } from './tolerance.js';

export const VQGAN_FIXTURES = ['two_levels', 'three_levels', 'pictures'];

export function decoderCases(fixturesDir: string): OpCase[] {
  const dir = join(fixturesDir, 'decoder', 'tiny');
  const ref = () => readSafetensors(join(dir, 'reference.safetensors'));
  const stageB: OpCase = {
    name: 'decoder forward (tiny: 4 levels, CT and CTA, effnet injected, odd heads)',
    async run(device: Device) {
      const t = (k: string) => getTensor(ref(), k);
      const decoder = Decoder.load(dir, { device });
      return {
        out: { tensor: await decoder.forward(t('x'), t('r'), t('effnet'), t('clip')), tolerance: TOLERANCE.forward },
      };
    },
    reference: () => ({ out: getTensor(ref(), 'out') }),
  };
  // bf16 Linear weights: the backends round the same GEMM operands, but multiply attention in
  // bf16 at different head dims (the GPU's flash kernels at 64, the CPU wherever it has
  // AVX512_BF16), so they agree within bf16 attention's error (measured 6.9e-3 where only the
  // CPU rounded; the CPU against float64 is in tests/decoder.test.ts).
  const stageBMixed: OpCase = {
    name: 'decoder forward, bf16 Linear weights (tiny)',
    async run(device: Device) {
      const t = (k: string) => getTensor(ref(), k);
      const decoder = Decoder.load(dir, { device, precision: 'bf16' });
      const out = await decoder.forward(t('x'), t('r'), t('effnet'), t('clip'));
      return { out: { tensor: out, tolerance: TOLERANCE.gpuMixed.attention.forward } };
    },
  };
  return [stageB, stageBMixed, ...vqganCases(fixturesDir)];
}

function vqganCases(fixturesDir: string): OpCase[] {
  return VQGAN_FIXTURES.map((name) => {
    const dir = join(fixturesDir, 'vqgan', name);
    const ref = () => readSafetensors(join(dir, 'reference.safetensors'));
    return {
      name: `vqgan decode (${name})`,
      async run(device: Device) {
        const vqgan = VQGAN.load(dir, { device });
        return { out: { tensor: await vqgan.decode(getTensor(ref(), 'latents')), tolerance: TOLERANCE.forward } };
      },
      reference: () => ({ out: getTensor(ref(), 'out') }),
    };
  });
}
