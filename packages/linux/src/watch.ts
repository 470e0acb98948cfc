/**
 * Readiness of any descriptor on Node's own event loop, without threads: a libuv poll handle
 * (`uv_poll_t`, through koffi's `koffi.node.poll`) adds the descriptor to the epoll set libuv
 * already waits on, and the callback runs on the loop when it is ready. A worker↔main round trip
 * through it measured ~8.5 µs, against ~25 µs with a thread-pool wait (see the README).
 *
 * koffi documents this API as subject to change; it is used in this file only.
 */

import koffi, { type node } from 'koffi';
import { EPOLL_CLOEXEC, EPOLLIN } from './constants.js';
import { LinuxError } from './errors.js';
import { lastErrno, libc } from './libc.js';

/** What a watched descriptor is ready for. */
export interface FdEvents {
  /** Data (or a connection, or a hang-up) can be read. */
  readonly readable: boolean;
  /** Data can be written. */
  readonly writable: boolean;
  /** The peer hung up (`EPOLLRDHUP`), when `disconnect` was asked for. */
  readonly disconnect: boolean;
  /** Set when libuv reports an error polling the descriptor (e.g. it was closed). */
  readonly error?: LinuxError;
}

/** What to watch for. */
export interface WatchOptions {
  /** Report readability (default true). */
  readonly readable?: boolean;
  /** Report writability (default false). */
  readonly writable?: boolean;
  /** Report peer hang-up (default false). */
  readonly disconnect?: boolean;
  /** Keep the process alive while watching, like an open socket (default true). */
  readonly ref?: boolean;
}

/** Called on the event loop each time the descriptor is ready. */
export type WatchCallback = (events: FdEvents) => void;

type PollHandle = node.PollHandle;
type RawPollCallback = (status: number, events: FdEvents) => void;

// The open watcher of each descriptor. libuv allows one poll handle per descriptor, and aborts
// the process if a watched descriptor is closed before its handle, so `close()` of this package
// looks here first. Holding the watchers also keeps them reachable: the native handle would
// otherwise be collected, and stop reporting, once the caller dropped its reference.
const watchers = new Map<number, FdWatcher>();

// koffi 3.3.4 aborts the process ("FATAL ERROR: Error::New") when libuv refuses a descriptor, so
// descriptors are vetted first with the same test libuv makes: adding them to an epoll set. One
// private epoll descriptor per thread serves for that.
let probe = -1;
const probeEvent = new Uint32Array(new ArrayBuffer(12));
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;

function assertPollable(fd: number): void {
  const c = libc();
  if (probe < 0) {
    probe = c.epoll_create1(EPOLL_CLOEXEC);
    if (probe < 0) throw new LinuxError(lastErrno(), 'epoll_create1');
  }
  probeEvent[0] = EPOLLIN;
  if (c.epoll_ctl(probe, EPOLL_CTL_ADD, fd, probeEvent) < 0) {
    const errno = lastErrno();
    throw new LinuxError(errno, 'poll', {
      detail: errno === 1 ? `fd ${fd} cannot be polled (a regular file or directory?)` : undefined,
    });
  }
  c.epoll_ctl(probe, EPOLL_CTL_DEL, fd, probeEvent);
}

/** Closes the watcher of `fd`, if any; called before the descriptor itself is closed. */
export function closeWatcherOf(fd: number): void {
  watchers.get(fd)?.close();
}

/**
 * Watches a descriptor on the event loop. Level-triggered: the callback runs again on the next
 * loop turn while the condition holds, so drain the descriptor (or `stop()`) in the callback.
 *
 * Descriptors epoll cannot watch (regular files, directories) fail with `EPERM`, closed ones
 * with `EBADF`. A descriptor Node itself already watches (a `net.Socket`'s, stdin) must not be
 * given: libuv refuses it and koffi 3.3.4 then aborts the process.
 *
 * Rules from libuv: one watcher per descriptor at a time (a second one fails with `EBUSY`); the
 * watcher must be closed before the descriptor is, or libuv aborts the process — this package's
 * `close()` does that for you, but closing the descriptor any other way (`fs.closeSync`, another
 * library) does not; the descriptor is switched to non-blocking mode.
 *
 * If the callback throws, the watcher stops and the exception is rethrown as an uncaught
 * exception on the next tick (an exception cannot travel back through libuv).
 *
 * @example
 * ```ts
 * const kick = eventfd();
 * const watcher = new FdWatcher(kick, () => {
 *   drainEventfd(kick);
 *   processQueue();
 * });
 * // later
 * watcher.close();
 * close(kick);
 * ```
 */
export class FdWatcher {
  /** The watched descriptor. */
  readonly fd: number;
  readonly #options: { readable: boolean; writable: boolean; disconnect: boolean };
  readonly #onPoll: RawPollCallback;
  #handle: PollHandle | null;
  #started = false;

  /**
   * Starts watching at once.
   *
   * @param fd - the descriptor (switched to non-blocking by libuv)
   * @param callback - runs on the event loop while the descriptor is ready
   * @param options - what to watch for (default: readable) and whether to keep the process alive
   */
  constructor(fd: number, callback: WatchCallback, options: WatchOptions = {}) {
    if (watchers.has(fd)) {
      throw new LinuxError(16, 'poll', { detail: `fd ${fd} already has a watcher` });
    }
    assertPollable(fd);
    this.fd = fd;
    this.#options = {
      readable: options.readable ?? true,
      writable: options.writable ?? false,
      disconnect: options.disconnect ?? false,
    };
    this.#onPoll = (status, events) => {
      try {
        callback(status < 0 ? { ...events, error: new LinuxError(-status, 'poll') } : events);
      } catch (error) {
        this.stop();
        process.nextTick(() => {
          throw error;
        });
      }
    };
    // koffi's typings declare a one-argument callback; the native side passes (status, events).
    const poll = koffi.node.poll as unknown as (
      fd: number,
      options: object,
      callback: RawPollCallback,
    ) => PollHandle | null;
    const handle = poll(fd, this.#options, this.#onPoll);
    if (handle === null) throw new LinuxError(9, 'poll', { detail: `cannot watch fd ${fd}` });
    this.#handle = handle;
    this.#started = true;
    watchers.set(fd, this);
    if (options.ref === false) handle.unref();
  }

  /** True until {@link close}. */
  get open(): boolean {
    return this.#handle !== null;
  }

  /** True while reporting readiness. */
  get started(): boolean {
    return this.#started;
  }

  /** Stops reporting until {@link start}; cheap (one `epoll_ctl`). */
  stop(): void {
    if (!this.#handle || !this.#started) return;
    this.#handle.stop();
    this.#started = false;
  }

  /** Resumes reporting after {@link stop}. */
  start(): void {
    const handle = this.#handle;
    if (!handle) throw new LinuxError(9, 'poll', { detail: 'the watcher is closed' });
    if (this.#started) return;
    assertPollable(this.fd);
    (handle.start as unknown as (options: object, callback: RawPollCallback) => void)(
      this.#options,
      this.#onPoll,
    );
    this.#started = true;
  }

  /** Stops watching for good and releases the libuv handle. The descriptor stays open. */
  close(): void {
    if (!this.#handle) return;
    this.#handle.close();
    this.#handle = null;
    this.#started = false;
    watchers.delete(this.fd);
  }

  /** Lets the process exit even while this watcher is started. */
  unref(): void {
    this.#handle?.unref();
  }

  /** Keeps the process alive while this watcher is started (the default). */
  ref(): void {
    this.#handle?.ref();
  }

  /** Same as {@link close}, for `using` declarations. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Resolves once `fd` is readable (or writable, with `{ writable: true, readable: false }`).
 * One-shot: for a descriptor that wakes repeatedly, keep an {@link FdWatcher} instead of paying
 * for a handle per wait.
 *
 * @param options - what to wait for, and an optional `signal` that cancels the wait (the promise
 *   rejects with the signal's reason)
 * @example
 * ```ts
 * const server = listenUnix(path, { nonBlocking: true });
 * await waitReadable(server);
 * const connection = accept(server);
 * ```
 */
export function waitReadable(
  fd: number,
  options: WatchOptions & { readonly signal?: AbortSignal } = {},
): Promise<FdEvents> {
  const { signal, ...watch } = options;
  signal?.throwIfAborted();
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      watcher.close();
      reject(signal?.reason);
    };
    const watcher = new FdWatcher(
      fd,
      (events) => {
        watcher.close();
        signal?.removeEventListener('abort', onAbort);
        if (events.error) reject(events.error);
        else resolve(events);
      },
      watch,
    );
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
