// The backends ops and models run on, by the names the native addon knows them by.
import { invalid } from './tensor.js';

export const DEVICES = ['cpu', 'cuda'] as const;
export type Device = (typeof DEVICES)[number];

/** `value` (default 'cpu') as a Device, else a TypeError naming `op`. */
export function checkDevice(op: string, value: unknown = 'cpu'): Device {
  if (!DEVICES.includes(value as Device)) invalid(op, "'cpu' or 'cuda'", 'device', value);
  return value as Device;
}
