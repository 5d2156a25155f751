// The case tables: the ops (ops.ts), whole prior steps (prior-steps.ts) and the picture models
// (decoders.ts), and how a case's outputs compare with references and across backends.
import type { Device } from '../../src/core/device.js';
import { decoderCases } from './decoders.js';
import { dataOf, relativeError } from './fixture.js';
import { type OpCase, opCases } from './ops.js';
import { priorStepCases } from './prior-steps.js';

export { Fixture, type FixtureCase, dataOf, relativeError } from './fixture.js';
export { VQGAN_FIXTURES, decoderCases } from './decoders.js';
export { type Differentiable, type OpCase, type Outputs, opCases } from './ops.js';
export { priorStepCases } from './prior-steps.js';
export { TOLERANCE } from './tolerance.js';

/** Every case two backends are compared on. */
export function parityCases(fixturesDir: string): OpCase[] {
  return [...opCases(fixturesDir), ...priorStepCases(), ...decoderCases(fixturesDir)];
}

export interface Comparison {
  output: string;
  error: number;
  tolerance: number;
}

/** Each output of a case on `device` against the CPU backend's. */
export async function compareWithCpu(c: OpCase, device: Device): Promise<Comparison[]> {
  const cpu = await c.run('cpu');
  const other = await c.run(device);
  const outputs = [...new Set([...Object.keys(cpu), ...Object.keys(other)])];
  return outputs.map((output) => ({
    output,
    error: relativeError(dataOf(other[output]?.tensor), dataOf(cpu[output]?.tensor)),
    tolerance: cpu[output]?.tolerance ?? 0,
  }));
}
