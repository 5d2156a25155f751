// The Würstchen prior's training objective (docs/wuerstchen-prior.md §4): the cosine schedule of
// DDPMWuerstchenScheduler (s = 0.008, scaler 1) and the noising of image embeddings.
const S = 0.008;
const INIT = Math.cos((S / (1 + S)) * Math.PI * 0.5) ** 2;

/** abar(t) = clamp(cos((t + s) / (1 + s) pi/2)^2 / cos(s / (1 + s) pi/2)^2, 1e-4, 0.9999). */
export function alphaCumprod(t: number): number {
  const a = Math.cos(((t + S) / (1 + S)) * Math.PI * 0.5) ** 2 / INIT;
  return Math.min(0.9999, Math.max(1e-4, a));
}

/** noisy = sqrt(abar(t_b)) x + sqrt(1 - abar(t_b)) noise, per batch item b. */
export function addNoise(x: Float32Array, noise: Float32Array, t: Float32Array): Float32Array {
  const per = x.length / t.length;
  const out = new Float32Array(x.length);
  for (let b = 0; b < t.length; b++) {
    const a = alphaCumprod(t[b]!);
    const sa = Math.sqrt(a),
      sn = Math.sqrt(1 - a);
    for (let i = b * per; i < (b + 1) * per; i++) out[i] = sa * x[i]! + sn * noise[i]!;
  }
  return out;
}
