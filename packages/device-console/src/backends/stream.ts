/**
 * The general backend: any Node Readable (host → guest) and/or Writable (guest → host), or one
 * Duplex for both. The stdio, file and socket backends are built on it.
 */

import type { Duplex, Readable, Writable } from 'node:stream';
import type { ConsoleSize } from '../requests.js';
import type { BackendHost, PortBackend, WriteResult } from './types.js';

/** Options of a {@link StreamBackend}. */
export interface StreamBackendOptions {
  /** Where guest input comes from (host → guest). Absent: the port has no input. */
  readonly input?: Readable;
  /** Where guest output goes (guest → host). Absent: guest output is dropped and counted. */
  readonly output?: Writable;
  /** The terminal size to report for a console port (default: none). */
  readonly size?: ConsoleSize;
  /**
   * End `output` and destroy `input` when the backend is closed (default false: the caller owns
   * the streams).
   */
  readonly end?: boolean;
}

/**
 * A port backend over Node streams. Input is read in paused mode: the backend only takes data
 * from `input` while the guest has buffers for it, so a slow guest slows the producer down (a
 * socket's peer, a pipe's writer) instead of filling memory. Output is written with the stream's
 * own backpressure: once `write` returns false the port stops taking guest output until `drain`.
 * The port is connected while `output` (or `input`, if there is no output) is open.
 *
 * @example
 * ```ts
 * const backend = new StreamBackend({ input: process.stdin, output: process.stdout });
 * const echo = new StreamBackend(new PassThrough()); // guest output comes back as input
 * ```
 */
export class StreamBackend implements PortBackend {
  readonly #input: Readable | undefined;
  readonly #output: Writable | undefined;
  readonly #end: boolean;
  #size: ConsoleSize | undefined;
  #host: BackendHost | undefined;
  #connected = false;
  #closed = false;
  readonly #cleanup: (() => void)[] = [];

  constructor(options: StreamBackendOptions | Duplex) {
    const isStream = typeof (options as Partial<Duplex>).pipe === 'function';
    const resolved: StreamBackendOptions = isStream
      ? { input: options as Duplex, output: options as Duplex }
      : (options as StreamBackendOptions);
    this.#input = resolved.input;
    this.#output = resolved.output;
    this.#end = resolved.end ?? false;
    this.#size = resolved.size;
  }

  /** True while the host side is open (see the class description). */
  get connected(): boolean {
    return this.#connected;
  }

  attach(host: BackendHost): void {
    this.#host = host;
    const input = this.#input;
    const output = this.#output;
    if (input) {
      this.#listen(input, 'data', (chunk: Buffer | string) => {
        host.input(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
      });
      // Adding a 'data' listener starts the flow on the next tick; pausing now means nothing is
      // read until the port asks for input.
      input.pause();
      this.#listen(input, 'error', (error: Error) => host.log(`console input: ${error.message}`));
    }
    if (output) {
      this.#listen(output, 'drain', () => host.drained());
      this.#listen(output, 'error', (error: Error) => {
        host.log(`console output: ${error.message}`);
        this.#setConnected(false);
      });
    }
    const lifeline = output ?? input;
    if (lifeline) this.#listen(lifeline, 'close', () => this.#setConnected(false));
    this.#setConnected(lifeline !== undefined && !lifeline.destroyed);
    if (this.#size) host.resize(this.#size);
  }

  write(data: Uint8Array): WriteResult {
    const output = this.#output;
    if (!output || output.destroyed || output.writableEnded || this.#closed) return 'dropped';
    return output.write(data) ? 'accepted' : 'full';
  }

  pauseInput(): void {
    this.#input?.pause();
  }

  resumeInput(): void {
    if (!this.#closed) this.#input?.resume();
  }

  /** Reports a new terminal size to the port (for terminals the backend cannot observe itself). */
  setSize(size: ConsoleSize): void {
    this.#size = size;
    this.#host?.resize(size);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#input?.pause();
    for (const remove of this.#cleanup.splice(0)) remove();
    const output = this.#output;
    const input = this.#input;
    // A late 'error' (EPIPE of a write still in flight) with no listener would crash the process.
    const ignore = () => {};
    output?.on('error', ignore);
    input?.on('error', ignore);
    if (!this.#end) return;
    if (output && !output.destroyed && !output.writableFinished) {
      await new Promise<void>((resolve) => {
        output.once('close', resolve);
        output.once('finish', resolve);
        output.once('error', resolve);
        output.end();
      });
    }
    if (input && input !== (output as unknown)) input.destroy();
  }

  #setConnected(connected: boolean): void {
    if (this.#connected === connected || (connected && this.#closed)) return;
    this.#connected = connected;
    this.#host?.setConnected(connected);
  }

  #listen(emitter: Readable | Writable, event: string, listener: (...args: never[]) => void): void {
    const callback = listener as (...args: unknown[]) => void;
    emitter.on(event, callback);
    this.#cleanup.push(() => emitter.off(event, callback));
  }
}
