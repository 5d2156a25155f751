// The picture models as backend cases: the VQGAN decoder of each fixture (tests/reference/
// vqgan_fixtures.py) on a device, with diffusers' float64 decode as the reference.
import { join } from 'node:path';
import type { Device } from '../../src/core/device.js';
import { getTensor, readSafetensors } from '../../src/io/safetensors.js';
import { VQGAN } from '../../src/models/vqgan.js';
import type { OpCase } from './ops.js';
import { TOLERANCE } from './tolerance.js';

export const VQGAN_FIXTURES = ['two_levels', 'three_levels'];

export function decoderCases(fixturesDir: string): OpCase[] {
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
