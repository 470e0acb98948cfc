import { describe, expect, it } from 'vitest';
import { accessValue, setAccessValue } from './bus.js';

describe('access values', () => {
  it('round-trips little-endian values of each width', () => {
    for (const [width, value] of [
      [1, 0xab],
      [2, 0xbeef],
      [4, 0xdeadbeef],
      [8, 0x1234_5678_9abc],
    ] as const) {
      const data = new Uint8Array(width);
      setAccessValue(data, value);
      expect(accessValue(data)).toBe(value);
    }
    expect([
      ...(() => {
        const d = new Uint8Array(4);
        setAccessValue(d, 0x01020304);
        return d;
      })(),
    ]).toEqual([4, 3, 2, 1]);
    expect(accessValue(new Uint8Array(8).fill(0xff))).toBeNaN();
  });
});
