import { describe, expect, it } from 'vitest';
import { EFD_CLOEXEC, EFD_NONBLOCK, EFD_SEMAPHORE } from './constants.js';
import { LinuxError } from './errors.js';
import { drainEventfd, eventfd, signalEventfd } from './eventfd.js';
import { close, fstat, read, setNonBlocking } from './files.js';

describe('eventfd', () => {
  it('accumulates signals and drains them in one read', () => {
    const fd = eventfd();
    try {
      expect(drainEventfd(fd)).toBe(0);
      signalEventfd(fd);
      signalEventfd(fd);
      signalEventfd(fd, 40);
      expect(drainEventfd(fd)).toBe(42);
      expect(drainEventfd(fd)).toBe(0);
    } finally {
      close(fd);
    }
  });

  it('carries counter values above 2^32', () => {
    const fd = eventfd({ initial: 0 });
    try {
      signalEventfd(fd, 2 ** 40 + 3);
      expect(drainEventfd(fd)).toBe(2 ** 40 + 3);
    } finally {
      close(fd);
    }
  });

  it('honours EFD_SEMAPHORE: one per read', () => {
    const fd = eventfd({ initial: 2, flags: EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC });
    try {
      expect(drainEventfd(fd)).toBe(1);
      expect(drainEventfd(fd)).toBe(1);
      expect(drainEventfd(fd)).toBe(0);
    } finally {
      close(fd);
    }
  });

  it('is non-blocking by default: read gives null, not an exception', () => {
    const fd = eventfd();
    try {
      expect(read(fd, new BigUint64Array(1))).toBeNull();
      setNonBlocking(fd, true);
      expect(fstat(fd).isFile).toBe(false);
    } finally {
      close(fd);
    }
  });

  it('reports a bad descriptor as LinuxError EBADF with the syscall', () => {
    const fd = eventfd();
    close(fd);
    const signal = () => signalEventfd(fd);
    expect(signal).toThrow(LinuxError);
    try {
      drainEventfd(fd);
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(LinuxError);
      const linuxError = error as LinuxError;
      expect(linuxError.code).toBe('EBADF');
      expect(linuxError.errno).toBe(9);
      expect(linuxError.syscall).toBe('read');
      expect(linuxError.message).toBe('read failed: bad file descriptor (EBADF)');
    }
    expect(() => close(fd)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'close' }));
  });
});
