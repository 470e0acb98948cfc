/**
 * A one-shot timer with microsecond resolution on Node's own event loop: a `timerfd`
 * (CLOCK_MONOTONIC) watched by an {@link FdWatcher}. Node's `setTimeout` rounds to whole
 * milliseconds, too coarse for device work such as interrupt moderation, where the delays that
 * matter are tens of microseconds. No thread is involved: the kernel's high-resolution timer makes
 * the descriptor readable and libuv's epoll wakes the loop.
 */

import { LinuxError } from './errors.js';
import { drainEventfd } from './eventfd.js';
import { close } from './files.js';
import { lastErrno, libc } from './libc.js';
import { FdWatcher } from './watch.js';

const CLOCK_MONOTONIC = 1;
const TFD_NONBLOCK = 0o4000;
const TFD_CLOEXEC = 0o2000000;

/**
 * A restartable one-shot timer; the callback runs on the event loop.
 *
 * @example
 * ```ts
 * const timer = new PreciseTimer(() => console.log('50 µs later'));
 * timer.start(50);
 * timer.close(); // when done with it
 * ```
 */
export class PreciseTimer {
  readonly #fd: number;
  // struct itimerspec { it_interval; it_value }, each { tv_sec, tv_nsec } as 64-bit integers.
  readonly #spec = new BigInt64Array(4);
  #armed = false;
  #closed = false;

  /**
   * @param callback - runs on the event loop when a started timer expires
   * @param options - `ref` (default false): whether an armed timer keeps the process alive
   */
  constructor(callback: () => void, options: { ref?: boolean } = {}) {
    const c = libc();
    const fd = c.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0) throw new LinuxError(lastErrno(), 'timerfd_create');
    this.#fd = fd;
    // The package keeps the watcher (and `close` below closes it before the descriptor).
    new FdWatcher(
      fd,
      () => {
        // A stale readiness (cancelled or restarted since) reads nothing and is ignored.
        if (!this.#consume() || !this.#armed) return;
        this.#armed = false;
        callback();
      },
      { ref: options.ref ?? false },
    );
  }

  /** True between {@link start} and expiry (or {@link cancel}). */
  get armed(): boolean {
    return this.#armed;
  }

  /** (Re)starts the timer to expire once, `micros` microseconds from now (at least 1 µs). */
  start(micros: number): void {
    if (this.#closed) throw new LinuxError(9, 'timerfd_settime', { detail: 'timer closed' });
    const nanos = Math.max(1000, Math.round(micros * 1000));
    this.#set(BigInt(Math.floor(nanos / 1e9)), BigInt(nanos % 1e9));
    this.#armed = true;
  }

  /** Stops a started timer; its callback will not run. */
  cancel(): void {
    if (this.#closed || !this.#armed) return;
    this.#armed = false;
    this.#set(0n, 0n);
    this.#consume();
  }

  /** Releases the descriptor. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#armed = false;
    close(this.#fd); // the watcher first, then the descriptor
  }

  #set(seconds: bigint, nanos: bigint): void {
    const spec = this.#spec;
    spec[2] = seconds;
    spec[3] = nanos;
    const c = libc();
    if (c.timerfd_settime(this.#fd, 0, spec, null) < 0) {
      throw new LinuxError(lastErrno(), 'timerfd_settime');
    }
  }

  /** Reads the expiration count; false when nothing had expired. */
  #consume(): boolean {
    // A timerfd reads like an eventfd: an 8-byte count, EAGAIN when there is none.
    return drainEventfd(this.#fd) > 0;
  }
}
