/**
 * A log file as a console: guest output is appended to it; there is no input.
 */

import { createWriteStream, type WriteStream } from 'node:fs';
import { ConsoleError } from '../errors.js';
import { StreamBackend } from './stream.js';
import type { BackendHost, PortBackend, WriteResult } from './types.js';

/** Options of {@link FileBackend.open}. */
export interface FileBackendOptions {
  /** Truncate the file instead of appending to it (default false). */
  readonly truncate?: boolean;
}

/**
 * Guest output appended to a file (created if missing). The file is always "connected"; it has
 * no input, so the guest reads nothing from the port.
 *
 * @example
 * ```ts
 * const device = new ConsoleDevice({ backend: await FileBackend.open('guest.log') });
 * ```
 */
export class FileBackend implements PortBackend {
  /** The file's path. */
  readonly path: string;
  readonly #stream: WriteStream;
  readonly #inner: StreamBackend;

  private constructor(path: string, stream: WriteStream) {
    this.path = path;
    this.#stream = stream;
    this.#inner = new StreamBackend({ output: stream, end: true });
  }

  /** Opens (or creates) `path` for appending; rejects with a `CONSOLE_BACKEND` error. */
  static async open(path: string, options: FileBackendOptions = {}): Promise<FileBackend> {
    const stream = createWriteStream(path, { flags: options.truncate ? 'w' : 'a' });
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', (error) =>
        reject(
          new ConsoleError('CONSOLE_BACKEND', `cannot open console log ${path}: ${error.message}`, {
            cause: error,
          }),
        ),
      );
    });
    return new FileBackend(path, stream);
  }

  /** Bytes written to the file so far (by this backend). */
  get bytesWritten(): number {
    return this.#stream.bytesWritten;
  }

  attach(host: BackendHost): void {
    this.#inner.attach(host);
  }

  write(data: Uint8Array): WriteResult {
    return this.#inner.write(data);
  }

  pauseInput(): void {}

  resumeInput(): void {}

  /** Flushes what is buffered and closes the file. */
  close(): Promise<void> {
    return this.#inner.close();
  }
}
