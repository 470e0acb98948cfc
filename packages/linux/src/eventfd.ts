/**
 * eventfd: the kernel's 64-bit counter with a file descriptor, the doorbell of virtio
 * (vhost-user kick and call, KVM ioeventfd and irqfd). Signalling adds to the counter and makes
 * the descriptor readable; draining reads and zeroes it, so many signals coalesce into one wake.
 */

import { EFD_CLOEXEC, EFD_NONBLOCK } from './constants.js';
import { LinuxError } from './errors.js';
import { lastErrno, libc } from './libc.js';

const EINTR = 4;
const EAGAIN = 11;
const TWO_32 = 0x1_0000_0000;

// One 8-byte scratch per thread: the calls are synchronous, and an ArrayBuffer's bytes never move.
const counter = new Uint32Array(new ArrayBuffer(8));

/**
 * Creates an eventfd and returns its descriptor.
 *
 * @param options - `initial` counter value (default 0); `flags` (default
 *   `EFD_NONBLOCK | EFD_CLOEXEC`; add `EFD_SEMAPHORE` for one-per-read semantics)
 * @example
 * ```ts
 * const kick = eventfd();
 * signalEventfd(kick);
 * drainEventfd(kick); // 1
 * drainEventfd(kick); // 0: nothing pending
 * ```
 */
export function eventfd(options: { initial?: number; flags?: number } = {}): number {
  const fd = libc().eventfd(options.initial ?? 0, options.flags ?? EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) throw new LinuxError(lastErrno(), 'eventfd');
  return fd;
}

/**
 * Adds `value` (default 1) to the counter, waking whoever waits on the descriptor.
 *
 * If the counter is about to overflow (`EAGAIN` on a non-blocking eventfd) a wake is already
 * pending and unread, so the signal is not lost and the call returns normally.
 */
export function signalEventfd(fd: number, value = 1): void {
  counter[0] = value >>> 0;
  counter[1] = Math.floor(value / TWO_32);
  const c = libc();
  while (c.write(fd, counter, 8) < 0) {
    const errno = lastErrno();
    if (errno === EAGAIN) return;
    if (errno !== EINTR) throw new LinuxError(errno, 'write', { detail: eventfdDetail(errno) });
  }
}

/**
 * Reads and resets the counter. Returns the accumulated value (the number of signals, or 1 with
 * `EFD_SEMAPHORE`), or 0 when nothing is pending on a non-blocking eventfd. A blocking eventfd
 * waits for a signal.
 */
export function drainEventfd(fd: number): number {
  const c = libc();
  while (c.read(fd, counter, 8) < 0) {
    const errno = lastErrno();
    if (errno === EAGAIN) return 0;
    if (errno !== EINTR) throw new LinuxError(errno, 'read', { detail: eventfdDetail(errno) });
  }
  return counter[0]! + counter[1]! * TWO_32;
}

function eventfdDetail(errno: number): string | undefined {
  return errno === 22 ? 'not an eventfd, or a value that does not fit the counter' : undefined;
}
