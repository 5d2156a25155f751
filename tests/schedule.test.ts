// The learning-rate schedules against diffusers' get_*_schedule_with_warmup.
import { describe, expect, it } from 'vitest';
import { lrFactor } from '../src/train/schedule.js';

describe('learning-rate schedules (diffusers semantics)', () => {
  it('constant, with warmup, linear and cosine', () => {
    expect([0, 5, 99].map((k) => lrFactor('constant', k, 100, 10))).toEqual([1, 1, 1]);
    expect([0, 5, 10, 50].map((k) => lrFactor('constant_with_warmup', k, 100, 10))).toEqual([0, 0.5, 1, 1]);
    expect([0, 5, 10, 55, 100].map((k) => lrFactor('linear', k, 100, 10))).toEqual([0, 0.5, 1, 0.5, 0]);
    expect(lrFactor('cosine', 10, 100, 10)).toBe(1);
    expect(lrFactor('cosine', 55, 100, 10)).toBeCloseTo(0.5, 12);
    expect(lrFactor('cosine', 100, 100, 10)).toBeCloseTo(0, 12);
  });
});
