/**
 * epoll: one descriptor that becomes ready when any of a set of descriptors does. A device
 * thread (a worker) can block in {@link Epoll.wait}; on the main thread, {@link Epoll.watch} and
 * {@link Epoll.waitAsync} put the epoll descriptor itself on Node's event loop, so a whole set of
 * queue kicks costs one libuv handle and no thread hop.
 */

import { EPOLL_CLOEXEC } from './constants.js';
import { LinuxError } from './errors.js';
import { lastErrno, libc } from './libc.js';
import { closeWatcherOf, FdWatcher } from './watch.js';

const EINTR = 4;
const EBADF = 9;
const EBUSY = 16;
const EINVAL = 22;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CTL_MOD = 3;

/** One ready descriptor from {@link Epoll.wait}. */
export interface EpollEvent {
  /** The token given to {@link Epoll.add} (the descriptor, unless another was given). */
  readonly token: number;
  /** Ready conditions, `EPOLLIN | EPOLLOUT | EPOLLERR | ...` bits. */
  readonly events: number;
}

// struct epoll_event is packed on x86_64: u32 events, u64 data = 12 bytes. The token goes in the
// low half of data.
const EVENT_WORDS = 3;

/**
 * An epoll instance.
 *
 * @example
 * ```ts
 * const epoll = new Epoll();
 * epoll.add(kick0, EPOLLIN, 0);
 * epoll.add(kick1, EPOLLIN, 1);
 * epoll.watch((ready) => {
 *   for (const { token } of ready) serviceQueue(token);
 * });
 * ```
 */
export class Epoll {
  /** The epoll descriptor (itself pollable). */
  readonly fd: number;
  /** Most events one wait returns. */
  readonly maxEvents: number;
  readonly #events: Uint32Array;
  readonly #control = new Uint32Array(new ArrayBuffer(EVENT_WORDS * 4));
  #watcher: FdWatcher | null = null;
  #pending: { cancel(error: LinuxError): void } | null = null;
  #closed = false;

  /** @param options - `maxEvents` per wait (default 64) */
  constructor(options: { maxEvents?: number } = {}) {
    const maxEvents = options.maxEvents ?? 64;
    if (!Number.isInteger(maxEvents) || maxEvents < 1) {
      throw new LinuxError(EINVAL, 'epoll_create1', { detail: `maxEvents ${maxEvents} < 1` });
    }
    const fd = libc().epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) throw new LinuxError(lastErrno(), 'epoll_create1');
    this.fd = fd;
    this.maxEvents = maxEvents;
    this.#events = new Uint32Array(new ArrayBuffer(maxEvents * EVENT_WORDS * 4));
  }

  /**
   * Adds `fd`, reporting `events` (`EPOLLIN`, `EPOLLOUT`, `EPOLLET`, ...). `token` (a uint32,
   * default `fd`) is what {@link wait} reports for it.
   */
  add(fd: number, events: number, token: number = fd): void {
    this.#ctl(EPOLL_CTL_ADD, fd, events, token, 'epoll_ctl(EPOLL_CTL_ADD)');
  }

  /** Changes the events and token of a descriptor already added. */
  modify(fd: number, events: number, token: number = fd): void {
    this.#ctl(EPOLL_CTL_MOD, fd, events, token, 'epoll_ctl(EPOLL_CTL_MOD)');
  }

  /** Removes `fd`. (Closing a descriptor removes it too, once no duplicate remains open.) */
  remove(fd: number): void {
    this.#ctl(EPOLL_CTL_DEL, fd, 0, 0, 'epoll_ctl(EPOLL_CTL_DEL)');
  }

  #ctl(operation: number, fd: number, events: number, token: number, syscall: string): void {
    const control = this.#control;
    control[0] = events >>> 0;
    control[1] = token >>> 0;
    control[2] = 0;
    if (libc().epoll_ctl(this.fd, operation, fd, control) < 0) {
      throw new LinuxError(lastErrno(), syscall);
    }
  }

  /**
   * Waits up to `timeoutMs` (-1: forever, 0: just look) and returns the ready descriptors, empty
   * on timeout or when a signal interrupted the wait. Blocks the calling thread: on the main
   * thread use a 0 timeout, {@link watch} or {@link waitAsync}.
   */
  wait(timeoutMs = -1): EpollEvent[] {
    const events = this.#events;
    const count = libc().epoll_wait(this.fd, events, this.maxEvents, timeoutMs);
    if (count < 0) {
      const errno = lastErrno();
      if (errno === EINTR) return [];
      throw new LinuxError(errno, 'epoll_wait');
    }
    const ready: EpollEvent[] = new Array(count);
    for (let i = 0; i < count; i++) {
      const at = i * EVENT_WORDS;
      ready[i] = { events: events[at]!, token: events[at + 1]! };
    }
    return ready;
  }

  /**
   * Resolves with the next non-empty batch of ready descriptors without blocking the event loop.
   * Only one `waitAsync` may be pending, and not while {@link watch} is active (`EBUSY`).
   */
  waitAsync(): Promise<EpollEvent[]> {
    if (this.#pending || this.#watcher) {
      return Promise.reject(
        new LinuxError(EBUSY, 'epoll_wait', { detail: 'this epoll is already being waited on' }),
      );
    }
    const now = this.wait(0);
    if (now.length > 0) return Promise.resolve(now);
    return new Promise((resolve, reject) => {
      const settle = () => {
        watcher.close();
        this.#pending = null;
      };
      const watcher = new FdWatcher(this.fd, (events) => {
        if (events.error) {
          settle();
          reject(events.error);
          return;
        }
        const ready = this.wait(0);
        if (ready.length === 0) return; // woken for a descriptor someone else drained
        settle();
        resolve(ready);
      });
      this.#pending = {
        cancel: (error) => {
          settle();
          reject(error);
        },
      };
    });
  }

  /**
   * Calls `callback` on the event loop with every non-empty batch of ready descriptors until
   * {@link unwatch} or {@link close}. Level-triggered descriptors that are not drained are
   * reported again on the next loop turn.
   *
   * @param options - `ref: false` lets the process exit while watching
   */
  watch(callback: (ready: EpollEvent[]) => void, options: { ref?: boolean } = {}): void {
    if (this.#pending || this.#watcher) {
      throw new LinuxError(EBUSY, 'epoll_wait', {
        detail: 'this epoll is already being waited on',
      });
    }
    this.#watcher = new FdWatcher(
      this.fd,
      (events) => {
        if (events.error) throw events.error;
        const ready = this.wait(0);
        if (ready.length > 0) callback(ready);
      },
      { ref: options.ref ?? true },
    );
  }

  /** Stops {@link watch}. */
  unwatch(): void {
    this.#watcher?.close();
    this.#watcher = null;
  }

  /**
   * Stops watching, rejects a pending {@link waitAsync} (`EBADF`) and closes the epoll
   * descriptor (not the descriptors added to it).
   */
  close(): void {
    if (this.#closed) return;
    this.unwatch();
    this.#pending?.cancel(
      new LinuxError(EBADF, 'epoll_wait', { detail: 'the epoll was closed while waited on' }),
    );
    this.#closed = true;
    closeWatcherOf(this.fd);
    if (libc().close(this.fd) < 0) throw new LinuxError(lastErrno(), 'close');
  }
}
