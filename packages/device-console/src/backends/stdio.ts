/**
 * The process's own terminal (or pipes) as a console: stdin is the guest's keyboard, stdout its
 * screen. A TTY stdin is put into raw mode (restored on close and at process exit) and the
 * terminal's size follows SIGWINCH. Output to a terminal goes to its descriptor off the event
 * loop, so a terminal that stops reading never stalls the VMM (see `guestOutput`).
 */

import { createWriteStream } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import type { ConsoleSize } from '../requests.js';
import { StreamBackend } from './stream.js';
import type { BackendHost, PortBackend, WriteResult } from './types.js';

/** A terminal input stream, as much of `tty.ReadStream` as the backend uses. */
export type TerminalInput = Readable & {
  readonly isTTY?: boolean;
  readonly isRaw?: boolean;
  setRawMode?(mode: boolean): unknown;
};

/** A terminal output stream, as much of `tty.WriteStream` as the backend uses. */
export type TerminalOutput = Writable & {
  readonly isTTY?: boolean;
  readonly columns?: number;
  readonly rows?: number;
  /** The terminal's descriptor (`tty.WriteStream` has one): guest output is written to it. */
  readonly fd?: number;
};

/** Options of a {@link StdioBackend}. */
export interface StdioBackendOptions {
  /** Input stream (default `process.stdin`). */
  readonly stdin?: TerminalInput;
  /** Output stream (default `process.stdout`). */
  readonly stdout?: TerminalOutput;
  /** Put a TTY stdin into raw mode so every key reaches the guest (default true). */
  readonly raw?: boolean;
  /**
   * In raw mode, Ctrl-C interrupts the VMM (SIGINT) instead of reaching the guest, like QEMU's
   * stdio character device (`signal=on`, its default). Default true.
   */
  readonly signals?: boolean;
  /** How a signal is raised (default: `process.kill(process.pid, signal)`). */
  readonly raise?: (signal: NodeJS.Signals) => void;
}

/**
 * Where guest output is written. Node writes to a terminal synchronously on Linux
 * (`tty.WriteStream` makes its descriptor blocking), so a terminal that stops reading — XOFF
 * (Ctrl-S), a stalled SSH session, a suspended terminal emulator — would hold the VMM's whole
 * event loop inside `write`. For a terminal with a descriptor, output therefore goes through an
 * `fs.WriteStream` on the same descriptor: the blocking write(2) waits on libuv's thread pool
 * instead, and the stream's backpressure (`write` returning false, then `drain`) stops taking the
 * guest's output meanwhile. Pipes are asynchronous in Node already, and files do not stall.
 */
function guestOutput(stdout: TerminalOutput): Writable {
  const fd = stdout.fd;
  if (!stdout.isTTY || typeof fd !== 'number') return stdout;
  // The descriptor belongs to the process: never closed here.
  return createWriteStream('', { fd, autoClose: false });
}

/** How long `close` waits for a terminal to take output still queued for it. */
const CLOSE_FLUSH_MS = 1000;

/** ETX: what Ctrl-C sends in raw mode. */
const CTRL_C = 0x03;

/**
 * The VMM's stdin/stdout as a console port backend.
 *
 * @example
 * ```ts
 * const device = new ConsoleDevice({ backend: new StdioBackend() });
 * // ... on shutdown: await device.close(); // restores the terminal
 * ```
 */
export class StdioBackend implements PortBackend {
  readonly #stdin: TerminalInput;
  readonly #stdout: TerminalOutput;
  readonly #inner: StreamBackend;
  /** Guest output's writer: `#stdout` itself, or a stream on a terminal's descriptor. */
  readonly #output: Writable;
  readonly #raw: boolean;
  readonly #signals: boolean;
  readonly #raise: (signal: NodeJS.Signals) => void;
  #wasRaw: boolean | undefined;
  #host: BackendHost | undefined;
  #closed = false;

  constructor(options: StdioBackendOptions = {}) {
    this.#stdin = options.stdin ?? process.stdin;
    this.#stdout = options.stdout ?? process.stdout;
    this.#output = guestOutput(this.#stdout);
    this.#inner = new StreamBackend({ input: this.#stdin, output: this.#output });
    this.#raw = options.raw ?? true;
    this.#signals = options.signals ?? true;
    this.#raise = options.raise ?? ((signal) => process.kill(process.pid, signal));
  }

  /** True while the terminal is in raw mode because of this backend. */
  get rawMode(): boolean {
    return this.#wasRaw !== undefined;
  }

  attach(host: BackendHost): void {
    this.#host = host;
    const stdin = this.#stdin;
    if (this.#raw && stdin.isTTY && typeof stdin.setRawMode === 'function') {
      this.#wasRaw = stdin.isRaw ?? false;
      stdin.setRawMode(true);
      process.once('exit', this.#restore);
    }
    this.#inner.attach({
      input: (data) => {
        const filtered = this.#filter(data);
        if (filtered.length > 0) host.input(filtered);
      },
      setConnected: (connected) => host.setConnected(connected),
      drained: () => host.drained(),
      resize: (size) => host.resize(size),
      log: (message) => host.log(message),
    });
    if (this.#stdout.isTTY) {
      this.#stdout.on('resize', this.#onResize);
      this.#onResize();
    }
  }

  write(data: Uint8Array): WriteResult {
    return this.#inner.write(data);
  }

  pauseInput(): void {
    this.#inner.pauseInput();
  }

  resumeInput(): void {
    this.#inner.resumeInput();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stdout.off('resize', this.#onResize);
    this.#restore();
    process.off('exit', this.#restore);
    // The streams belong to the process: they are paused, never ended.
    await this.#inner.close();
    // The terminal writer may still hold output (the guest's last lines before a shutdown):
    // give the terminal a moment to take it, but never wait on a terminal that does not read.
    const output = this.#output;
    if (output === this.#stdout || output.writableLength === 0 || output.destroyed) return;
    if (output.writableEnded) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, CLOSE_FLUSH_MS);
      // Writes complete in order: an empty one's callback runs once everything before it is out.
      output.write(new Uint8Array(0), () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  readonly #restore = (): void => {
    if (this.#wasRaw === undefined) return;
    const previous = this.#wasRaw;
    this.#wasRaw = undefined;
    try {
      this.#stdin.setRawMode?.(previous);
    } catch {
      // The terminal may be gone already (hang-up at exit); nothing left to restore.
    }
  };

  readonly #onResize = (): void => {
    const { columns, rows } = this.#stdout;
    if (columns === undefined || rows === undefined) return;
    const size: ConsoleSize = { cols: columns, rows };
    this.#host?.resize(size);
  };

  #filter(data: Uint8Array): Uint8Array {
    if (!this.#signals || !this.rawMode || !data.includes(CTRL_C)) return data;
    // The terminal's ISIG is off in raw mode, so do its job for Ctrl-C.
    this.#raise('SIGINT');
    return data.filter((byte) => byte !== CTRL_C);
  }
}
