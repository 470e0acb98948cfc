import { afterEach, describe, expect, it } from 'vitest';
import { EPOLLET, EPOLLIN, EPOLLOUT } from './constants.js';
import { Epoll } from './epoll.js';
import { LinuxError } from './errors.js';
import { drainEventfd, eventfd, signalEventfd } from './eventfd.js';
import { close } from './files.js';

const cleanups: Array<() => void> = [];
afterEach(() => {
  while (cleanups.length > 0) cleanups.pop()!();
});

function setup(count: number): { epoll: Epoll; fds: number[] } {
  const epoll = new Epoll();
  const fds = Array.from({ length: count }, () => eventfd());
  cleanups.push(() => {
    epoll.close();
    for (const fd of fds) close(fd);
  });
  return { epoll, fds };
}

describe('Epoll', () => {
  it('reports exactly the ready descriptors with their tokens', () => {
    const { epoll, fds } = setup(3);
    for (const [queue, fd] of fds.entries()) epoll.add(fd, EPOLLIN, 100 + queue);
    expect(epoll.wait(0)).toEqual([]);
    signalEventfd(fds[2]!);
    signalEventfd(fds[0]!);
    const ready = epoll.wait(0);
    expect(ready.map((event) => event.token).sort()).toEqual([100, 102]);
    for (const event of ready) expect(event.events & EPOLLIN).toBe(EPOLLIN);
    // Level-triggered: still ready until drained.
    expect(epoll.wait(0)).toHaveLength(2);
    drainEventfd(fds[0]!);
    drainEventfd(fds[2]!);
    expect(epoll.wait(0)).toEqual([]);
  });

  it('times out after the given milliseconds when nothing is ready', () => {
    const { epoll, fds } = setup(1);
    epoll.add(fds[0]!, EPOLLIN);
    const start = performance.now();
    expect(epoll.wait(30)).toEqual([]);
    expect(performance.now() - start).toBeGreaterThanOrEqual(25);
  });

  it('uses the descriptor as default token, and modify/remove change what is reported', () => {
    const { epoll, fds } = setup(1);
    const fd = fds[0]!;
    epoll.add(fd, EPOLLIN);
    signalEventfd(fd);
    expect(epoll.wait(0)).toEqual([{ token: fd, events: EPOLLIN }]);
    // An eventfd is always writable: switching to EPOLLOUT reports it.
    epoll.modify(fd, EPOLLOUT | EPOLLET, 7);
    expect(epoll.wait(0)).toEqual([{ token: 7, events: EPOLLOUT }]);
    expect(epoll.wait(0)).toEqual([]); // edge-triggered: reported once
    epoll.remove(fd);
    expect(epoll.wait(0)).toEqual([]);
    expect(() => epoll.remove(fd)).toThrow(expect.objectContaining({ code: 'ENOENT' }));
  });

  it('waitAsync resolves when a descriptor becomes ready, without blocking the loop', async () => {
    const { epoll, fds } = setup(2);
    epoll.add(fds[0]!, EPOLLIN, 0);
    epoll.add(fds[1]!, EPOLLIN, 1);
    let timerRan = false;
    const pending = epoll.waitAsync();
    setTimeout(() => {
      timerRan = true;
      signalEventfd(fds[1]!);
    }, 5);
    const ready = await pending;
    expect(timerRan).toBe(true);
    expect(ready).toEqual([{ token: 1, events: EPOLLIN }]);
    await expect(epoll.waitAsync()).resolves.toHaveLength(1); // still pending: resolves at once
  });

  it('refuses a second waiter and rejects a pending one on close', async () => {
    const epoll = new Epoll();
    const pending = epoll.waitAsync();
    await expect(epoll.waitAsync()).rejects.toMatchObject({ code: 'EBUSY' });
    expect(() => epoll.watch(() => {})).toThrow(LinuxError);
    epoll.close();
    await expect(pending).rejects.toMatchObject({ code: 'EBADF', syscall: 'epoll_wait' });
  });

  it('watch delivers batches on the event loop until unwatch', async () => {
    const { epoll, fds } = setup(2);
    for (const [queue, fd] of fds.entries()) epoll.add(fd, EPOLLIN, queue);
    const batches: number[][] = [];
    let wake: () => void = () => {};
    epoll.watch((ready) => {
      batches.push(ready.map((event) => event.token).sort());
      for (const event of ready) drainEventfd(fds[event.token]!);
      wake();
    });
    const next = () => new Promise<void>((resolve) => (wake = resolve));
    let woken = next();
    signalEventfd(fds[0]!);
    signalEventfd(fds[1]!);
    await woken;
    woken = next();
    signalEventfd(fds[1]!);
    await woken;
    expect(batches).toEqual([[0, 1], [1]]);
    epoll.unwatch();
    signalEventfd(fds[0]!);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(batches).toHaveLength(2);
  });
});
