// Dynamic loss scaling for fp16, against the rules of torch.amp.GradScaler.
import { describe, expect, it } from 'vitest';
import { GradScaler } from '../src/train/grad-scaler.js';

describe('GradScaler', () => {
  it('follows torch.amp.GradScaler: halve and skip on overflow, double after growthInterval finite steps', () => {
    const scaler = new GradScaler(true, undefined, 3);
    expect(scaler.scale).toBe(65536);
    expect(scaler.update(Number.POSITIVE_INFINITY)).toBe(true);
    expect(scaler.scale).toBe(32768);
    expect([scaler.update(1), scaler.update(2)]).toEqual([false, false]);
    expect(scaler.scale).toBe(32768);
    expect(scaler.update(Number.NaN)).toBe(true);
    expect(scaler.toJSON()).toEqual({ scale: 16384, growthTracker: 0 });
    for (let i = 0; i < 3; i++) scaler.update(1);
    expect(scaler.scale).toBe(32768);
    const off = new GradScaler(false);
    expect([off.scale, off.update(Number.NaN), off.scale]).toEqual([1, false, 1]);
  });
});
