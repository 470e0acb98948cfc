/**
 * Stream socket backend with QEMU's `-netdev stream` framing: every Ethernet frame is preceded by
 * its length as a 4-byte big-endian integer (QEMU net/stream.c). Over a Unix or TCP socket, as
 * server (`listen`) or client, so two Virtkit VMs can share a wire, or a Virtkit VM can talk to a
 * QEMU started with `-netdev stream,server=off,addr.type=unix,addr.path=PATH` (or the reverse).
 *
 * The framing has no room for a `virtio_net_hdr`, so this backend carries plain frames and the
 * device offers no checksum or segmentation offloads over it (as QEMU does for such a netdev).
 */

import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { NetError } from '../errors.js';
import type { NetBackend, NetBackendPort, SendResult } from './backend.js';

/** Largest frame accepted from the peer: QEMU's NET_BUFSIZE (4096 + 65536). */
export const STREAM_MAX_FRAME = 4096 + 65536;
/** Bytes of the length prefix. */
export const STREAM_LENGTH_BYTES = 4;

/** Where a stream backend connects or listens. */
export type StreamAddress =
  | { readonly kind: 'unix'; readonly path: string }
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number };

/**
 * Parses the `socket` option: `host:port` or `[v6addr]:port` is TCP, anything else a Unix socket
 * path. `unix:PATH` and `tcp:HOST:PORT` force the kind.
 */
export function parseStreamAddress(text: string): StreamAddress {
  if (text.startsWith('unix:')) return { kind: 'unix', path: text.slice(5) };
  const tcp = /^(?:tcp:)?(?:\[([0-9a-fA-F:.]+)\]|([^/:[\]]*)):(\d{1,5})$/.exec(text);
  if (tcp) {
    const port = Number(tcp[3]);
    // Port 0 is for a server that lets the kernel pick (see StreamBackend.localPort).
    if (port > 65535) {
      throw new NetError('NET_INVALID_OPTIONS', `TCP port ${port} in '${text}' is not 0..65535`);
    }
    return { kind: 'tcp', host: tcp[1] ?? (tcp[2] || '127.0.0.1'), port };
  }
  if (text.startsWith('tcp:')) {
    throw new NetError('NET_INVALID_OPTIONS', `'${text}' is not tcp:HOST:PORT`);
  }
  if (text === '') throw new NetError('NET_INVALID_OPTIONS', 'socket address is empty');
  return { kind: 'unix', path: text };
}

/** Formats an address for messages (`unix:/run/a.sock`, `tcp:127.0.0.1:5555`). */
export function formatStreamAddress(address: StreamAddress): string {
  return address.kind === 'unix'
    ? `unix:${address.path}`
    : `tcp:${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
}

/** Options of {@link StreamBackend.open}. */
export interface StreamBackendOptions {
  /** `host:port`, `[v6]:port`, or a Unix socket path (see {@link parseStreamAddress}). */
  readonly address: string | StreamAddress;
  /** Listen for one peer at a time instead of connecting (default false). */
  readonly listen?: boolean;
  /** Client only: milliseconds between reconnection attempts; 0 disables (default 1000). */
  readonly reconnectMs?: number;
  /** Received frames buffered before the socket is paused (default 64). */
  readonly maxQueuedFrames?: number;
  /** Diagnostic messages. */
  readonly log?: (message: string) => void;
}

/** Counters particular to the stream backend. */
export interface StreamStats {
  /** Connections made (accepted or connected). */
  connections: number;
  /** Peers refused because one was already connected (server). */
  refused: number;
  /** Connections dropped because the peer sent a length beyond {@link STREAM_MAX_FRAME}. */
  framingErrors: number;
  /** Zero-length frames ignored. */
  emptyFrames: number;
}

/**
 * A `-netdev stream` compatible backend.
 *
 * @example
 * ```ts
 * const backend = await StreamBackend.open({ address: '/run/vm-a.sock', listen: true });
 * const device = new NetDevice({ backend });
 * ```
 */
export class StreamBackend implements NetBackend {
  readonly kind = 'stream';
  readonly vnetHeader = false;
  readonly channels = 1;
  readonly description: string;
  readonly address: StreamAddress;
  readonly listening: boolean;
  readonly stats: StreamStats = { connections: 0, refused: 0, framingErrors: 0, emptyFrames: 0 };
  readonly #reconnectMs: number;
  readonly #maxQueued: number;
  readonly #log: (message: string) => void;
  #server: Server | undefined;
  #socket: Socket | undefined;
  #port: NetBackendPort | undefined;
  #closed = false;
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #lastConnectError: string | undefined;
  /** Complete frames waiting for the device. */
  readonly #inbox: Buffer[] = [];
  /** Bytes of a frame (or length prefix) not complete yet. */
  #partial: Buffer = Buffer.alloc(0);
  #paused = false;
  #wantsReadable = false;
  #wantsWritable = false;

  private constructor(address: StreamAddress, options: StreamBackendOptions) {
    this.address = address;
    this.listening = options.listen ?? false;
    this.description = `${formatStreamAddress(address)}${this.listening ? ',listen' : ''}`;
    this.#reconnectMs = options.reconnectMs ?? 1000;
    this.#maxQueued = Math.max(1, options.maxQueuedFrames ?? 64);
    this.#log = options.log ?? (() => {});
  }

  /**
   * Opens the backend. A server is listening when the promise resolves (an address in use is an
   * error now, not later); a client starts connecting and keeps retrying in the background, with
   * the link down until it is connected.
   */
  static async open(options: StreamBackendOptions): Promise<StreamBackend> {
    const address =
      typeof options.address === 'string' ? parseStreamAddress(options.address) : options.address;
    const backend = new StreamBackend(address, options);
    if (backend.listening) await backend.#listen();
    else backend.#connect();
    return backend;
  }

  get linkUp(): boolean {
    return this.#socket !== undefined;
  }

  /** True while the socket is paused because the device is not taking frames. */
  get paused(): boolean {
    return this.#paused;
  }

  /** For a TCP server: the port it listens on (useful with port 0). */
  get localPort(): number | undefined {
    const bound = this.#server?.address();
    return bound && typeof bound === 'object' ? bound.port : undefined;
  }

  attach(port: NetBackendPort): void {
    this.#port = port;
  }

  setOffloads(): void {
    // Plain frames only: nothing to configure.
  }

  setActiveChannels(): void {
    // One channel.
  }

  receive(): Uint8Array | null {
    const frame = this.#inbox.shift();
    if (!frame) {
      this.#wantsReadable = true;
      return null;
    }
    if (this.#paused && this.#inbox.length <= this.#maxQueued >> 1) {
      this.#paused = false;
      this.#socket?.resume();
    }
    return frame;
  }

  send(_channel: number, pieces: readonly Uint8Array[]): SendResult {
    const socket = this.#socket;
    if (!socket || this.#closed) return 'dropped';
    let length = 0;
    for (const piece of pieces) length += piece.length;
    // One buffer per frame: the pieces are guest memory and valid only during this call.
    const out = Buffer.allocUnsafe(STREAM_LENGTH_BYTES + length);
    out.writeUInt32BE(length, 0);
    let offset = STREAM_LENGTH_BYTES;
    for (const piece of pieces) {
      out.set(piece, offset);
      offset += piece.length;
    }
    if (socket.write(out)) return 'sent';
    this.#wantsWritable = true;
    socket.once('drain', () => this.#notifyWritable());
    return 'congested';
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#reconnectTimer);
    this.#socket?.destroy();
    this.#socket = undefined;
    const server = this.#server;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  #listen(): Promise<void> {
    const server = createServer({ pauseOnConnect: false }, (socket) => {
      if (this.#socket || this.#closed) {
        // One peer at a time, like QEMU's stream server.
        this.stats.refused++;
        socket.destroy();
        return;
      }
      this.#attachSocket(socket);
    });
    this.#server = server;
    return new Promise((resolve, reject) => {
      server.once('error', (error) =>
        reject(
          new NetError('NET_BACKEND', `cannot listen on ${this.description}: ${error.message}`, {
            cause: error,
          }),
        ),
      );
      const address = this.address;
      const done = () => {
        server.on('error', (error) => this.#log(`${this.description}: ${error.message}`));
        resolve();
      };
      if (address.kind === 'unix') server.listen(address.path, done);
      else server.listen(address.port, address.host, done);
    });
  }

  #connect(): void {
    if (this.#closed) return;
    const address = this.address;
    const socket =
      address.kind === 'unix'
        ? createConnection({ path: address.path })
        : createConnection({ host: address.host, port: address.port });
    let connected = false;
    socket.once('connect', () => {
      connected = true;
      if (this.#closed) socket.destroy();
      else this.#attachSocket(socket);
    });
    socket.on('error', (error) => {
      // Retried every reconnectMs: say it once, not every second.
      if (!connected && error.message !== this.#lastConnectError) {
        this.#lastConnectError = error.message;
        this.#log(`${this.description}: ${error.message} (retrying)`);
      }
    });
    socket.once('close', () => {
      if (!connected) this.#scheduleReconnect();
    });
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#reconnectMs <= 0 || this.#reconnectTimer) return;
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      this.#connect();
    }, this.#reconnectMs);
    this.#reconnectTimer.unref?.();
  }

  #attachSocket(socket: Socket): void {
    this.#socket = socket;
    this.#lastConnectError = undefined;
    this.#partial = Buffer.alloc(0);
    this.#paused = false;
    this.stats.connections++;
    socket.setNoDelay?.(true);
    socket.on('data', (chunk: Buffer) => this.#onData(socket, chunk));
    socket.on('error', (error) => this.#log(`${this.description}: ${error.message}`));
    socket.once('close', () => {
      if (this.#socket !== socket) return;
      this.#socket = undefined;
      this.#paused = false;
      this.#port?.link(false);
      // A sender waiting for 'drain' would wait forever: let it go on (its frames now drop).
      if (this.#wantsWritable) this.#notifyWritable();
      if (!this.listening) this.#scheduleReconnect();
    });
    this.#port?.link(true);
  }

  #onData(socket: Socket, chunk: Buffer): void {
    let data = this.#partial.length > 0 ? Buffer.concat([this.#partial, chunk]) : chunk;
    let arrived = false;
    while (data.length >= STREAM_LENGTH_BYTES) {
      const length = data.readUInt32BE(0);
      if (length > STREAM_MAX_FRAME) {
        // No way to find the next frame boundary: drop the connection, as QEMU does.
        this.stats.framingErrors++;
        this.#log(`${this.description}: peer sent a ${length}-byte frame length; disconnecting`);
        this.#partial = Buffer.alloc(0);
        socket.destroy();
        return;
      }
      if (data.length < STREAM_LENGTH_BYTES + length) break;
      if (length === 0) this.stats.emptyFrames++;
      else {
        // A copy, so the device may keep the frame while the chunk's memory is reused.
        this.#inbox.push(
          Buffer.from(data.subarray(STREAM_LENGTH_BYTES, STREAM_LENGTH_BYTES + length)),
        );
        arrived = true;
      }
      data = data.subarray(STREAM_LENGTH_BYTES + length);
    }
    this.#partial = data.length > 0 ? Buffer.from(data) : Buffer.alloc(0);
    if (this.#inbox.length >= this.#maxQueued && !this.#paused) {
      // The device is not taking frames fast enough (no guest buffers): stop reading.
      this.#paused = true;
      socket.pause();
    }
    if (arrived && this.#wantsReadable) {
      this.#wantsReadable = false;
      this.#port?.readable(0);
    }
  }

  #notifyWritable(): void {
    if (!this.#wantsWritable) return;
    this.#wantsWritable = false;
    this.#port?.writable(0);
  }
}
