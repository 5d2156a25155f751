// Writes what tests/reference/check_lora_in_diffusers.py compares: lora-train's saved LoRA file
// for a prior, and lora-train's output with it on random inputs.
// Usage: node tests/reference/export-lora-check.js <prior dir> <lora file or folder> <out dir>
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadPrior } from '../../dist/src/models/prior.js';
import { Rng } from '../../dist/src/core/rng.js';
import { writeSafetensors } from '../../dist/src/io/safetensors.js';

const [priorDir, lora, outDir] = process.argv.slice(2);
if (!outDir) {
  console.error('usage: node tests/reference/export-lora-check.js <prior dir> <lora file or folder> <out dir>');
  process.exit(2);
}
const prior = await loadPrior(priorDir);
prior.loadLora(lora);
mkdirSync(outDir, { recursive: true });
prior.saveLora(outDir);
const rng = new Rng(5);
const t = (shape, f) => ({ data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, f), shape });
const { c_in, c_cond } = prior.config;
const x = t([2, c_in, 4, 6], () => rng.normal()),
  r = t([2], () => rng.uniform()),
  clip = t([2, 9, c_cond], () => rng.normal());
const out = await prior.forward(x, r, clip);
writeSafetensors(join(outDir, 'ours.safetensors'), { x, r, clip, out });
console.log(`wrote ${join(outDir, 'pytorch_lora_weights.safetensors')} and ours.safetensors`);
