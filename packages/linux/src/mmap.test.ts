import { describe, expect, it } from 'vitest';
import { MAP_PRIVATE, PROT_READ } from './constants.js';
import { close, fstat, ftruncate, pread, pwrite } from './files.js';
import { addressOf, viewMemory } from './memory.js';
import { memfdCreate, mmap } from './mmap.js';

const SIZE = 64 << 10;

describe('memfd + mmap', () => {
  it('writes through the ArrayBuffer are visible via pread on the fd, and vice versa', () => {
    const fd = memfdCreate('virtkit-test');
    const mapping = (() => {
      ftruncate(fd, SIZE);
      return mmap({ fd, length: SIZE });
    })();
    try {
      expect(fstat(fd).size).toBe(SIZE);
      expect(mapping.length).toBe(SIZE);
      expect(mapping.buffer.byteLength).toBe(SIZE);
      expect(mapping.address % 4096).toBe(0);
      const bytes = new Uint8Array(mapping.buffer);
      bytes.set([1, 2, 3, 4], 5000);
      const back = new Uint8Array(4);
      expect(pread(fd, back, 5000)).toBe(4);
      expect([...back]).toEqual([1, 2, 3, 4]);
      pwrite(fd, Uint8Array.of(9, 8, 7), SIZE - 3);
      expect([...bytes.subarray(SIZE - 3)]).toEqual([9, 8, 7]);
      // The buffer is the mapping itself: its address is the mapping's address.
      expect(addressOf(bytes)).toBe(mapping.address);
    } finally {
      mapping.unmap();
      close(fd);
    }
    expect(mapping.mapped).toBe(false);
    mapping.unmap(); // idempotent
  });

  it('a second mapping of the same memfd sees the same bytes at another address', () => {
    const fd = memfdCreate('virtkit-test');
    ftruncate(fd, SIZE);
    const first = mmap({ fd, length: SIZE });
    const second = mmap({ fd, length: SIZE });
    const offsetView = mmap({ fd, length: 4096, offset: 8192, protection: PROT_READ });
    try {
      expect(second.address).not.toBe(first.address);
      const a = new Uint8Array(first.buffer);
      const b = new Uint8Array(second.buffer);
      a[8192 + 10] = 0x42;
      expect(b[8192 + 10]).toBe(0x42);
      b[100] = 0x24;
      expect(a[100]).toBe(0x24);
      expect(new Uint8Array(offsetView.buffer)[10]).toBe(0x42);
      // Another thread would rebuild a view from the number alone.
      expect(new Uint8Array(viewMemory(first.address + 100, 1))[0]).toBe(0x24);
      first.sync();
    } finally {
      first.unmap();
      second.unmap();
      offsetView.unmap();
      close(fd);
    }
  });

  it('maps anonymous memory (shared by default, or private)', () => {
    const shared = mmap({ length: 10_000 });
    const privateMapping = mmap({ length: 4096, flags: MAP_PRIVATE });
    try {
      const bytes = new Uint8Array(shared.buffer);
      expect(bytes.byteLength).toBe(10_000);
      expect(bytes.every((byte) => byte === 0)).toBe(true);
      bytes[9_999] = 1;
      new Uint8Array(privateMapping.buffer)[0] = 1;
    } finally {
      shared.unmap();
      privateMapping.unmap();
    }
  });

  it('reports failures as LinuxError', () => {
    expect(() => mmap({ fd: 1_000_000, length: 4096 })).toThrow(
      expect.objectContaining({ code: 'EBADF', syscall: 'mmap' }),
    );
    expect(() => mmap({ length: 0 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => memfdCreate('x', 0xffff)).toThrow(
      expect.objectContaining({ code: 'EINVAL', syscall: 'memfd_create' }),
    );
  });
});
