/**
 * A Unix socket server as a console: the first client to connect gets the port until it
 * disconnects; the port's open/close state follows the connection.
 */

import { lstat, unlink } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { ConsoleError } from '../errors.js';
import type { BackendHost, PortBackend, WriteResult } from './types.js';

/** Options of {@link SocketBackend.listen}. */
export interface SocketBackendOptions {
  /**
   * Replace a socket file left at `path` by an earlier process (default true). Anything else at
   * the path (a regular file, a directory) is never removed: listening fails instead.
   */
  readonly replaceStale?: boolean;
}

/**
 * A Unix socket server for one console port. While no client is connected, guest output is
 * dropped and counted (as QEMU's socket character device does) and, on a multiport device, the
 * guest sees the port closed by the host (PORT_OPEN 0: reads return end-of-file and writes wait).
 * A second client is refused while the first is connected.
 *
 * @example
 * ```ts
 * const backend = await SocketBackend.listen('/run/vm/console.sock');
 * const device = new ConsoleDevice({ backend });
 * // socat -,raw,echo=0 UNIX-CONNECT:/run/vm/console.sock
 * ```
 */
export class SocketBackend implements PortBackend {
  /** The socket's path. */
  readonly path: string;
  readonly #server: Server;
  #client: Socket | undefined;
  #host: BackendHost | undefined;
  #inputPaused = true;
  #refused = 0;
  #closed = false;

  private constructor(path: string, server: Server) {
    this.path = path;
    this.#server = server;
    server.on('connection', (socket) => this.#accept(socket));
    server.on('error', (error) => this.#host?.log(`console socket ${path}: ${error.message}`));
  }

  /** Creates the socket at `path` and listens; rejects with a `CONSOLE_BACKEND` error. */
  static async listen(path: string, options: SocketBackendOptions = {}): Promise<SocketBackend> {
    if (options.replaceStale ?? true) {
      const existing = await lstat(path).catch(() => undefined);
      if (existing?.isSocket()) await unlink(path).catch(() => {});
    }
    const server = createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error) =>
        reject(
          new ConsoleError('CONSOLE_BACKEND', `cannot listen on ${path}: ${error.message}`, {
            cause: error,
          }),
        );
      server.once('error', onError);
      server.listen(path, () => {
        server.off('error', onError);
        resolve();
      });
    });
    return new SocketBackend(path, server);
  }

  /** True while a client holds the port. */
  get clientConnected(): boolean {
    return this.#client !== undefined;
  }

  /** Clients turned away because another one held the port. */
  get refused(): number {
    return this.#refused;
  }

  attach(host: BackendHost): void {
    this.#host = host;
    if (this.#client) host.setConnected(true);
  }

  write(data: Uint8Array): WriteResult {
    const client = this.#client;
    if (!client || client.destroyed || !client.writable) return 'dropped';
    return client.write(data) ? 'accepted' : 'full';
  }

  pauseInput(): void {
    this.#inputPaused = true;
    this.#client?.pause();
  }

  resumeInput(): void {
    this.#inputPaused = false;
    this.#client?.resume();
  }

  /** Disconnects the client, stops listening and removes the socket file. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const client = this.#client;
    this.#client = undefined;
    client?.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await unlink(this.path).catch(() => {});
  }

  #accept(socket: Socket): void {
    if (this.#client || this.#closed) {
      this.#refused++;
      this.#host?.log(`console socket ${this.path}: refused a second client`);
      socket.destroy();
      return;
    }
    this.#client = socket;
    // Errors (ECONNRESET, EPIPE) end the connection; 'close' follows and reports it.
    socket.on('error', (error) => this.#host?.log(`console socket ${this.path}: ${error.message}`));
    socket.on('data', (chunk: Buffer) => this.#host?.input(chunk));
    socket.on('drain', () => this.#host?.drained());
    socket.on('close', () => {
      if (this.#client !== socket) return;
      this.#client = undefined;
      this.#host?.setConnected(false);
    });
    // pauseOnConnect: nothing is read until the port asks for input.
    if (this.#inputPaused) socket.pause();
    else socket.resume();
    this.#host?.setConnected(true);
  }
}
