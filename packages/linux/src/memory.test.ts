import { describe, expect, it } from 'vitest';
import { LinuxError } from './errors.js';
import { addressOf, alignedBuffer, IOV_MAX, IovecList, rawIovecs, viewMemory } from './memory.js';

describe('addressOf', () => {
  it('is stable for a buffer and adds view offsets', () => {
    const buffer = new ArrayBuffer(4096);
    const base = addressOf(new Uint8Array(buffer));
    expect(base).toBeGreaterThan(0);
    expect(Number.isSafeInteger(base)).toBe(true);
    expect(addressOf(new Uint8Array(buffer, 100))).toBe(base + 100);
    expect(addressOf(new Uint32Array(buffer, 8, 2))).toBe(base + 8);
    expect(addressOf(new DataView(buffer, 7))).toBe(base + 7);
    expect(addressOf(new Uint8Array(buffer).subarray(3000))).toBe(base + 3000);
  });

  it('returns the address of a SharedArrayBuffer view, the same memory viewMemory shows', () => {
    const shared = new SharedArrayBuffer(8192);
    const bytes = new Uint8Array(shared);
    const address = addressOf(bytes.subarray(4096));
    const alias = new Uint8Array(viewMemory(address, 16));
    alias[3] = 0x5a;
    expect(bytes[4099]).toBe(0x5a);
    bytes[4100] = 0xa5;
    expect(alias[4]).toBe(0xa5);
  });

  it('moves small on-heap typed arrays out of the heap first, so the address stays valid', () => {
    const small = new Uint8Array(8); // small arrays start on V8's moving heap
    const alias = new Uint8Array(viewMemory(addressOf(small), 8));
    // Allocate to give the collector reason to move things, then check the alias still matches.
    const garbage: unknown[] = [];
    for (let i = 0; i < 10_000; i++) garbage.push({ i, text: `${i}` });
    small[5] = 77;
    expect(alias[5]).toBe(77);
  });

  it('gives 0 for an empty buffer, and viewMemory refuses a bad address', () => {
    expect(addressOf(new Uint8Array(0))).toBe(0);
    expect(() => viewMemory(0, 8)).toThrow(LinuxError);
    expect(() => viewMemory(1.5, 8)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
  });
});

describe('alignedBuffer', () => {
  it('aligns the address, not just the offset', () => {
    for (const alignment of [8, 512, 4096, 1 << 16]) {
      const buffer = alignedBuffer(100, alignment);
      expect(addressOf(buffer) % alignment).toBe(0);
      expect(buffer.byteLength).toBe(100);
    }
  });
});

describe('IovecList', () => {
  it('records address and length of each entry in struct iovec layout', () => {
    const list = new IovecList(2);
    const a = new Uint8Array(new ArrayBuffer(64), 16, 32);
    list.push(a).pushAddress(2 ** 40 + 5, 2 ** 33);
    expect(list.count).toBe(2);
    expect(list.totalLength).toBe(32 + 2 ** 33);
    const raw = list[rawIovecs];
    const u64 = (word: number) => raw[word]! + raw[word + 1]! * 2 ** 32;
    expect([u64(0), u64(2), u64(4), u64(6)]).toEqual([addressOf(a), 32, 2 ** 40 + 5, 2 ** 33]);
    expect(() => list.push(a)).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    list.clear();
    expect(list.count).toBe(0);
    expect(list.totalLength).toBe(0);
  });

  it('accepts 1..IOV_MAX entries', () => {
    expect(() => new IovecList(0)).toThrow(LinuxError);
    expect(() => new IovecList(IOV_MAX + 1)).toThrow(LinuxError);
    expect(IovecList.from([new Uint8Array(1), new Uint8Array(2)]).totalLength).toBe(3);
  });
});
