// The progress bar on a terminal and its plain lines elsewhere.
import { describe, expect, it } from 'vitest';
import { Progress } from '../src/core/progress.js';

describe('progress', () => {
  it('redraws one line on a TTY and prints plain lines elsewhere', () => {
    const tty: string[] = [];
    const p = new Progress('cache', 3, { stream: { write: (s: string) => tty.push(s) > 0, isTTY: true } });
    p.tick();
    p.tick();
    p.tick();
    expect(tty).toHaveLength(3);
    expect(tty[0]).toMatch(/^cache \[#{8}\.{16}\] 1\/3 .* it\/s ETA \d+:\d\d\r$/);
    expect(tty[2]).toMatch(/3\/3 .*\n$/);
    const plain: string[] = [];
    const q = new Progress('cache', 3, { stream: { write: (s: string) => plain.push(s) > 0 }, lineInterval: 60_000 });
    q.tick();
    q.tick();
    q.tick();
    expect(plain.length).toBe(2); // the first tick, then the final one
    expect(plain.every((l) => l.endsWith('\n'))).toBe(true);
  });

  it('names the unit of its rate', () => {
    const lines: string[] = [];
    const p = new Progress('embeddings', 2, { stream: { write: (s: string) => lines.push(s) > 0 }, unit: 'images' });
    p.tick(2);
    expect(lines[0]).toMatch(/^embeddings \[#{24}\] 2\/2 [\d.]+ images\/s ETA 0:00\n$/);
  });
});
