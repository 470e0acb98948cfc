/**
 * One end of a vhost-user connection: a non-blocking Unix stream socket watched on Node's event
 * loop. Messages are reassembled from however the stream splits them (descriptors arrive with the
 * first byte of the message they belong to), and outgoing messages wait in a queue while the
 * socket is full. Used by the backend and by the test front-end.
 */

import { close, FdWatcher, LinuxError, recvmsg, sendmsg } from '@virtkit/linux';
import { HEADER_SIZE, MAX_PAYLOAD_SIZE, requestName, VERSION, VERSION_MASK } from './constants.js';
import { VhostUserError } from './errors.js';
import type { Message } from './message.js';

/** Where a {@link Channel} delivers what it reads. */
export interface ChannelHandlers {
  /** A whole message arrived. The handler owns `message.fds`. */
  message(message: Message): void;
  /**
   * The channel closed: the peer hung up (`error` undefined), a read or write failed, or the peer
   * broke the framing. Called once; the socket is already closed.
   */
  closed(error?: Error): void;
}

interface Outgoing {
  readonly bytes: Uint8Array;
  readonly fds: readonly number[];
  /** Close `fds` once sent (or dropped): they were handed over to the channel. */
  readonly transfer: boolean;
  sent: number;
}

/**
 * A message stream over a connected Unix socket it takes ownership of.
 *
 * @example
 * ```ts
 * const channel = new Channel(fd, {
 *   message: (m) => console.log(m.request),
 *   closed: (error) => console.log('gone', error?.message),
 * });
 * channel.send(encodeMessage(Request.GET_FEATURES, 0));
 * ```
 */
export class Channel {
  readonly fd: number;
  readonly #handlers: ChannelHandlers;
  readonly #ref: boolean;
  #watcher: FdWatcher | null = null;
  #watchingWritable = false;
  #closed = false;
  readonly #header = new Uint8Array(HEADER_SIZE);
  readonly #headerView = new DataView(this.#header.buffer);
  #headerFilled = 0;
  #payload: Uint8Array | null = null;
  #payloadFilled = 0;
  #fds: number[] = [];
  readonly #outgoing: Outgoing[] = [];

  /**
   * @param fd - a connected stream socket; the channel makes it non-blocking and closes it
   * @param options - `ref: false` lets the process exit while the channel is open
   */
  constructor(fd: number, handlers: ChannelHandlers, options: { ref?: boolean } = {}) {
    this.fd = fd;
    this.#handlers = handlers;
    this.#ref = options.ref ?? true;
    this.#watch(false);
  }

  /** True once the channel closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Queues `bytes` (a whole encoded message) and `fds` (sent with its first byte) and writes as
   * much as the socket takes now. With `transfer: true` the channel closes `fds` once they are
   * sent (or the channel closes first); otherwise the caller keeps them open until then.
   */
  send(bytes: Uint8Array, fds: readonly number[] = [], options: { transfer?: boolean } = {}): void {
    const transfer = options.transfer ?? false;
    if (this.#closed) {
      if (transfer) for (const fd of fds) closeQuietly(fd);
      return;
    }
    this.#outgoing.push({ bytes, fds, transfer, sent: 0 });
    this.#flush();
  }

  /** Closes the socket. Descriptors of a partly received message are closed too. */
  close(): void {
    this.#shutdown(undefined, false);
  }

  #watch(writable: boolean): void {
    this.#watcher?.close();
    this.#watchingWritable = writable;
    this.#watcher = new FdWatcher(this.fd, (events) => this.#onEvents(events), {
      readable: true,
      writable,
      ref: this.#ref,
    });
  }

  #onEvents(events: { readable: boolean; writable: boolean; error?: Error }): void {
    if (this.#closed) return;
    if (events.error) {
      this.#shutdown(events.error, true);
      return;
    }
    if (events.writable) this.#flush();
    if (events.readable && !this.#closed) this.#read();
  }

  #flush(): void {
    try {
      while (this.#outgoing.length > 0) {
        const next = this.#outgoing[0]!;
        const sent = sendmsg(
          this.fd,
          next.bytes.subarray(next.sent),
          next.sent === 0 ? next.fds : [],
        );
        if (sent === null) break;
        if (next.sent === 0 && next.transfer) for (const fd of next.fds) closeQuietly(fd);
        next.sent += sent;
        if (next.sent < next.bytes.length) break;
        this.#outgoing.shift();
      }
    } catch (error) {
      this.#shutdown(error as Error, true);
      return;
    }
    const wantWritable = this.#outgoing.length > 0;
    if (wantWritable !== this.#watchingWritable && !this.#closed) this.#watch(wantWritable);
  }

  #read(): void {
    for (;;) {
      const target =
        this.#payload === null
          ? this.#header.subarray(this.#headerFilled)
          : this.#payload.subarray(this.#payloadFilled);
      let received: ReturnType<typeof recvmsg>;
      try {
        received = recvmsg(this.fd, target);
      } catch (error) {
        this.#shutdown(error as Error, true);
        return;
      }
      if (received === null) return;
      this.#fds.push(...received.fds);
      if (received.controlTruncated) {
        this.#shutdown(
          new VhostUserError(
            'VHOST_USER_PROTOCOL',
            'peer sent more descriptors than one message carries',
          ),
          true,
        );
        return;
      }
      if (received.bytes === 0) {
        if (received.fds.length > 0) continue;
        this.#shutdown(undefined, true);
        return;
      }
      if (this.#payload === null) {
        this.#headerFilled += received.bytes;
        if (this.#headerFilled < HEADER_SIZE) continue;
        const flags = this.#headerView.getUint32(4, true);
        const size = this.#headerView.getUint32(8, true);
        const request = this.#headerView.getUint32(0, true);
        if ((flags & VERSION_MASK) !== VERSION) {
          this.#shutdown(
            new VhostUserError(
              'VHOST_USER_PROTOCOL',
              `${requestName(request)} has protocol version ${flags & VERSION_MASK}, expected ${VERSION}`,
            ),
            true,
          );
          return;
        }
        if (size > MAX_PAYLOAD_SIZE) {
          this.#shutdown(
            new VhostUserError(
              'VHOST_USER_PROTOCOL',
              `${requestName(request)} announces a ${size}-byte payload, more than ${MAX_PAYLOAD_SIZE}`,
            ),
            true,
          );
          return;
        }
        this.#payload = new Uint8Array(size);
        this.#payloadFilled = 0;
      } else {
        this.#payloadFilled += received.bytes;
      }
      if (this.#payloadFilled === this.#payload.length) this.#deliver();
      if (this.#closed) return;
    }
  }

  #deliver(): void {
    const message: Message = {
      request: this.#headerView.getUint32(0, true),
      flags: this.#headerView.getUint32(4, true),
      payload: this.#payload!,
      fds: this.#fds,
    };
    this.#headerFilled = 0;
    this.#payload = null;
    this.#payloadFilled = 0;
    this.#fds = [];
    this.#handlers.message(message);
  }

  #shutdown(error: Error | undefined, notify: boolean): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#watcher?.close();
    this.#watcher = null;
    for (const fd of this.#fds) closeQuietly(fd);
    this.#fds = [];
    for (const pending of this.#outgoing) {
      if (pending.transfer && pending.sent === 0) for (const fd of pending.fds) closeQuietly(fd);
    }
    this.#outgoing.length = 0;
    closeQuietly(this.fd);
    if (notify) this.#handlers.closed(error);
  }
}

/** Closes a descriptor, ignoring errors (it may already be gone). */
export function closeQuietly(fd: number): void {
  try {
    close(fd);
  } catch (error) {
    if (!(error instanceof LinuxError)) throw error;
  }
}
