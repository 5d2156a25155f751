// `node dist/bench/load-prior.js '{"dir": …}'`: loads the prior snapshot in `dir` (see
// writeRealPrior) once, in a process of its own, and prints {seconds} as one JSON line. With
// "write": true it first writes the snapshot: the real prior's config and a safetensors file of
// its parameters, filled with small finite values (the load reads and checks every byte).
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { Prior, type PriorConfig } from '../src/models/prior.js';
import { native } from '../src/native/loader.js';

export const REAL_PRIOR: PriorConfig = { c_in: 16, c: 1536, c_cond: 1280, c_r: 64, depth: 32, nhead: 24, dropout: 0.1 };

/** `dir`/prior/{config.json, diffusion_pytorch_model.safetensors} at the real size, fp32. */
function writeRealPrior(dir: string): void {
  const folder = join(dir, 'prior');
  mkdirSync(folder, { recursive: true });
  writeFileSync(join(folder, 'config.json'), JSON.stringify({ _class_name: 'WuerstchenPrior', ...REAL_PRIOR }));
  const params = new (native().Prior)('cpu', { ...REAL_PRIOR, weight_type: 'f32' }).parameters();
  const header: Record<string, unknown> = {};
  let at = 0;
  for (const p of params) {
    const bytes = p.shape.reduce((a, b) => a * b, 1) * 4;
    header[p.name] = { dtype: 'F32', shape: p.shape, data_offsets: [at, at + bytes] };
    at += bytes;
  }
  const json = Buffer.from(JSON.stringify(header).padEnd(Math.ceil(JSON.stringify(header).length / 8) * 8));
  const fd = openSync(join(folder, 'diffusion_pytorch_model.safetensors'), 'w');
  try {
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    writeSync(fd, length);
    writeSync(fd, json);
    const chunk = new Float32Array(1 << 22).map((_, i) => ((i * 2654435761) % 2001) / 1e5 - 0.01);
    const bytes = new Uint8Array(chunk.buffer);
    for (let left = at; left > 0; left -= bytes.length) writeSync(fd, bytes, 0, Math.min(left, bytes.length));
  } finally {
    closeSync(fd);
  }
}

const spec = JSON.parse(process.argv[2]!) as { dir: string; write?: boolean };
if (spec.write) writeRealPrior(spec.dir);
else {
  const start = performance.now();
  await Prior.load(spec.dir);
  console.log(JSON.stringify({ seconds: (performance.now() - start) / 1000 }));
}
