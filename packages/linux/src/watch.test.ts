import { describe, expect, it } from 'vitest';
import { O_CLOEXEC, O_RDONLY } from './constants.js';
import { drainEventfd, eventfd, signalEventfd } from './eventfd.js';
import { close, open } from './files.js';
import { libc } from './libc.js';
import { FdWatcher, waitReadable } from './watch.js';

describe('FdWatcher', () => {
  it('calls back on each readiness until stopped, and again after start', async () => {
    const fd = eventfd();
    const seen: number[] = [];
    let wake: () => void = () => {};
    const next = () => new Promise<void>((resolve) => (wake = resolve));
    const watcher = new FdWatcher(fd, (events) => {
      expect(events.readable).toBe(true);
      seen.push(drainEventfd(fd));
      wake();
    });
    try {
      let woken = next();
      signalEventfd(fd, 3);
      await woken;
      watcher.stop();
      expect(watcher.started).toBe(false);
      signalEventfd(fd, 4);
      await new Promise((resolve) => setTimeout(resolve, 10));
      expect(seen).toEqual([3]);
      woken = next();
      watcher.start();
      await woken;
      expect(seen).toEqual([3, 4]);
    } finally {
      watcher.close();
      expect(watcher.open).toBe(false);
      close(fd);
    }
  });

  it('reports writability when asked', async () => {
    const fd = eventfd();
    try {
      const events = await waitReadable(fd, { readable: false, writable: true });
      expect(events).toMatchObject({ readable: false, writable: true });
    } finally {
      close(fd);
    }
  });
});

describe('waitReadable', () => {
  it('resolves once the descriptor is readable', async () => {
    const fd = eventfd();
    try {
      setTimeout(() => signalEventfd(fd), 5);
      const events = await waitReadable(fd);
      expect(events.readable).toBe(true);
      expect(drainEventfd(fd)).toBe(1);
    } finally {
      close(fd);
    }
  });

  it('rejects with the abort reason when cancelled', async () => {
    const fd = eventfd();
    try {
      const controller = new AbortController();
      const pending = waitReadable(fd, { signal: controller.signal });
      controller.abort(new Error('shutting down'));
      await expect(pending).rejects.toThrow('shutting down');
      // The handle is gone: a later signal must not resolve anything or keep the loop alive.
      signalEventfd(fd);
    } finally {
      close(fd);
    }
  });
});

describe('watcher lifetime', () => {
  it('allows one watcher per descriptor', async () => {
    const fd = eventfd();
    const watcher = new FdWatcher(fd, () => {});
    try {
      expect(() => new FdWatcher(fd, () => {})).toThrow(expect.objectContaining({ code: 'EBUSY' }));
      watcher.stop();
      await expect(waitReadable(fd)).rejects.toMatchObject({ code: 'EBUSY' });
    } finally {
      watcher.close();
      close(fd);
    }
  });

  it('close() of a watched descriptor closes its watcher first (libuv would abort otherwise)', async () => {
    const fd = eventfd();
    const watcher = new FdWatcher(fd, () => {});
    const stopped = new FdWatcher(eventfd(), () => {});
    stopped.stop();
    close(fd);
    close(stopped.fd);
    expect(watcher.open).toBe(false);
    expect(stopped.open).toBe(false);
    expect(() => watcher.start()).toThrow(expect.objectContaining({ code: 'EBADF' }));
    // Let libuv run a loop turn with the descriptors gone: it must not abort the process.
    await new Promise((resolve) => setTimeout(resolve, 10));
    const reused = eventfd(); // likely the same number: a new watcher must be accepted
    try {
      const pending = waitReadable(reused);
      signalEventfd(reused);
      await expect(pending).resolves.toMatchObject({ readable: true });
    } finally {
      close(reused);
    }
  });
});

describe('descriptors that cannot be watched', () => {
  it('fail with a LinuxError instead of reaching libuv (which would abort)', () => {
    const file = open('/proc/self/status', O_RDONLY | O_CLOEXEC);
    try {
      expect(() => new FdWatcher(file, () => {})).toThrow(
        expect.objectContaining({ code: 'EPERM', syscall: 'poll' }),
      );
    } finally {
      close(file);
    }
    expect(() => new FdWatcher(1_000_000, () => {})).toThrow(
      expect.objectContaining({ code: 'EBADF' }),
    );
    const fd = eventfd();
    const watcher = new FdWatcher(fd, () => {});
    watcher.stop();
    // Closed behind the watcher's back (not through close()): start() must refuse, not abort.
    libc().close(fd);
    expect(() => watcher.start()).toThrow(expect.objectContaining({ code: 'EBADF' }));
    watcher.close();
  });
});
