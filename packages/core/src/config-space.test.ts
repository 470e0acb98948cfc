import { describe, expect, it, vi } from 'vitest';
import { ConfigSpace } from './config-space.js';

describe('ConfigSpace', () => {
  it('reads fields the device set, little-endian', () => {
    const config = new ConfigSpace(16);
    config.setU64(0, 0x1122334455667788n);
    config.setU32(8, 512);
    config.setU16(12, 0xabcd);
    config.setU8(14, 7);
    const out = new Uint8Array(8);
    expect(config.read(0, out)).toBe(true);
    expect([...out]).toEqual([0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);
    expect(config.getU32(8)).toBe(512);
    expect(config.getU16(12)).toBe(0xabcd);
    expect(config.getU8(14)).toBe(7);
    expect(config.getU64(0)).toBe(0x1122334455667788n);
  });

  it('reports changes only when a byte changed', () => {
    const config = new ConfigSpace(8);
    const listener = vi.fn();
    const off = config.onChange(listener);
    config.setU32(0, 5);
    config.setU32(0, 5);
    expect(listener).toHaveBeenCalledTimes(1);
    config.setBytes(4, Uint8Array.of(1, 2));
    expect(listener).toHaveBeenCalledTimes(2);
    off();
    config.setU32(0, 6);
    expect(listener).toHaveBeenCalledTimes(2);
  });

  it('refuses reads and writes outside the space and writes to read-only bytes', () => {
    const onWrite = vi.fn();
    const config = new ConfigSpace(8, { writable: [{ offset: 4, length: 2 }], onWrite });
    const out = Uint8Array.of(9, 9, 9, 9);
    expect(config.read(6, out)).toBe(false);
    expect([...out]).toEqual([0, 0, 0, 0]);
    expect(config.read(-1, new Uint8Array(1))).toBe(false);
    expect(config.write(7, Uint8Array.of(1, 2))).toBe('out-of-range');
    expect(config.write(0, Uint8Array.of(1))).toBe('read-only');
    expect(config.write(5, Uint8Array.of(1, 2))).toBe('read-only');
    expect(onWrite).not.toHaveBeenCalled();
    expect(config.write(4, Uint8Array.of(0xaa, 0xbb))).toBe('ok');
    expect(onWrite).toHaveBeenCalledWith(4, Uint8Array.of(0xaa, 0xbb));
    expect(config.getU16(4)).toBe(0xbbaa);
    expect(() => config.setU32(6, 1)).toThrow(RangeError);
  });
});
