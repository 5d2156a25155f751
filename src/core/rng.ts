import { sha256 } from './hash.js';

/** A small seedable generator (splitmix32 seeding a xoshiro128**), for reproducible LoRA
 * initialisation and data order. Not cryptographic. */
export class Rng {
  private s: Uint32Array;

  constructor(seed: number) {
    let x = seed >>> 0;
    const next = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s = new Uint32Array([next(), next(), next(), next()]);
  }

  /** Uniform 32-bit integer. */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    const u = 1 - this.uniform();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
  }

  /** The generator's state, for checkpoints. */
  state(): number[] {
    return [...this.s];
  }

  static fromState(state: number[]): Rng {
    const r = new Rng(0);
    r.s = Uint32Array.from(state);
    return r;
  }
}

/** A stream for one purpose, reproducible from the seed and its labels ('order', epoch, ...):
 * what makes a resumed run draw exactly what an uninterrupted one would. */
export function seededRng(seed: number, ...labels: (string | number)[]): Rng {
  return new Rng(Number.parseInt(sha256(`${seed}:${labels.join(':')}`).slice(0, 8), 16));
}

/** A 52-bit seed for the native dropout masks of one purpose, from the seed and its labels. */
export function nativeSeed(seed: number, ...labels: (string | number)[]): number {
  return Number.parseInt(sha256(`${seed}:${labels.join(':')}`).slice(0, 12), 16);
}

/** 0..n-1 shuffled (Fisher-Yates). */
export function permutation(n: number, rng: Rng): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}
