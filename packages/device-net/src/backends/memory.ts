/**
 * In-process backends wired back to back: what one side sends, the other receives. Two devices
 * on a pair form a two-port network without the host; a device and a bare endpoint make a test
 * bench (the test sends and receives on the endpoint). Each direction holds a bounded number of
 * frames, so a receiver that stops pulling makes the sender see `congested`.
 */

import {
  type GuestOffloads,
  type NetBackend,
  type NetBackendPort,
  NO_OFFLOADS,
  type SendResult,
} from './backend.js';

/** Options of {@link createMemoryPair}. */
export interface MemoryPairOptions {
  /**
   * Frames carry a 12-byte `virtio_net_hdr` first, so offloads pass through (default false:
   * plain Ethernet frames, like the stream backend).
   */
  readonly vnetHeader?: boolean;
  /** Frames each direction holds before the sender is told `congested` (default 64). */
  readonly capacity?: number;
}

/** One end of an in-process pair. */
export class MemoryBackend implements NetBackend {
  readonly kind = 'memory';
  readonly channels = 1;
  readonly vnetHeader: boolean;
  readonly description: string;
  readonly capacity: number;
  /** Frames waiting for this end to receive. */
  readonly #inbox: Uint8Array[] = [];
  #peer: MemoryBackend | undefined;
  #port: NetBackendPort | undefined;
  #linkUp = true;
  #closed = false;
  #wantsReadable = false;
  #wantsWritable = false;
  #waiters: (() => void)[] = [];
  /** Offloads the owning device asked for (recorded for tests; a pair forwards headers as they are). */
  offloads: GuestOffloads = NO_OFFLOADS;
  /** Channels the owning device uses. */
  activeChannels = 1;

  constructor(name: string, options: MemoryPairOptions = {}) {
    this.vnetHeader = options.vnetHeader ?? false;
    this.capacity = options.capacity ?? 64;
    this.description = name;
  }

  /** The other end. */
  get peer(): MemoryBackend {
    if (!this.#peer) throw new Error('memory backend has no peer');
    return this.#peer;
  }

  /** Wires two ends together (done by {@link createMemoryPair}). */
  static connect(a: MemoryBackend, b: MemoryBackend): void {
    a.#peer = b;
    b.#peer = a;
  }

  get linkUp(): boolean {
    return this.#linkUp;
  }

  /** Frames waiting to be received on this end. */
  get pending(): number {
    return this.#inbox.length;
  }

  /** Simulates the link going down or up (both ends see it). */
  setLink(up: boolean): void {
    for (const end of [this, this.#peer]) {
      if (!end || end.#linkUp === up) continue;
      end.#linkUp = up;
      end.#schedule((port) => port.link(up));
    }
  }

  attach(port: NetBackendPort): void {
    this.#port = port;
  }

  setOffloads(offloads: GuestOffloads): void {
    this.offloads = { ...offloads };
  }

  setActiveChannels(count: number): void {
    this.activeChannels = count;
  }

  receive(_channel = 0): Uint8Array | null {
    const frame = this.#inbox.shift();
    if (!frame) {
      this.#wantsReadable = true;
      return null;
    }
    const peer = this.#peer;
    if (peer && this.#inbox.length < this.capacity) peer.#wakeWriter();
    return frame;
  }

  send(_channel: number, pieces: readonly Uint8Array[]): SendResult {
    const peer = this.#peer;
    if (this.#closed || !peer || peer.#closed || !this.#linkUp) return 'dropped';
    if (peer.#inbox.length >= peer.capacity) {
      this.#wantsWritable = true;
      return 'again';
    }
    let length = 0;
    for (const piece of pieces) length += piece.length;
    const frame = new Uint8Array(length);
    let offset = 0;
    for (const piece of pieces) {
      frame.set(piece, offset);
      offset += piece.length;
    }
    peer.#deliver(frame);
    if (peer.#inbox.length >= peer.capacity) {
      this.#wantsWritable = true;
      return 'congested';
    }
    return 'sent';
  }

  /** Sends one whole frame from this end (test convenience). */
  inject(frame: Uint8Array): SendResult {
    return this.send(0, [frame]);
  }

  /** Resolves with the next frame received on this end, or rejects after `timeoutMs`. */
  async next(timeoutMs = 2000): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const frame = this.receive(0);
      if (frame) return frame;
      const left = deadline - Date.now();
      if (left <= 0)
        throw new Error(`no frame arrived on ${this.description} within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#inbox.length = 0;
  }

  #deliver(frame: Uint8Array): void {
    this.#inbox.push(frame);
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
    if (this.#wantsReadable) {
      this.#wantsReadable = false;
      this.#schedule((port) => port.readable(0));
    }
  }

  #wakeWriter(): void {
    if (!this.#wantsWritable) return;
    this.#wantsWritable = false;
    this.#schedule((port) => port.writable(0));
  }

  #schedule(call: (port: NetBackendPort) => void): void {
    // Asynchronous, so a device never re-enters itself through its peer in one call stack.
    queueMicrotask(() => {
      if (this.#port && !this.#closed) call(this.#port);
    });
  }
}

/**
 * Creates two connected in-process backends.
 *
 * @example
 * ```ts
 * const [deviceSide, testSide] = createMemoryPair();
 * const device = new NetDevice({ backend: deviceSide });
 * testSide.inject(frame);           // the guest receives it
 * const sent = await testSide.next(); // a frame the guest transmitted
 * ```
 */
export function createMemoryPair(options: MemoryPairOptions = {}): [MemoryBackend, MemoryBackend] {
  const a = new MemoryBackend('memory:a', options);
  const b = new MemoryBackend('memory:b', options);
  MemoryBackend.connect(a, b);
  return [a, b];
}
