/**
 * The host side of a console port. A backend moves bytes between a port and something on the
 * host (a terminal, a file, a socket, any Node stream) and reports the host side's state.
 */

import type { ConsoleSize } from '../requests.js';

/** What a port tells its backend's caller after a {@link PortBackend.write}. */
export type WriteResult =
  /** Taken; the backend can take more. */
  | 'accepted'
  /**
   * Taken, but the backend now holds as much unsent data as it wants to: the device stops taking
   * guest output for this port until {@link BackendHost.drained} is called.
   */
  | 'full'
  /** Not taken: there is nowhere to send it (no client connected, no output). Counted as dropped. */
  | 'dropped';

/**
 * The port, as its backend sees it. The device hands one to {@link PortBackend.attach}; every
 * method may be called at any time, from any event-loop callback.
 */
export interface BackendHost {
  /**
   * Input for the guest. The device keeps a reference to `data` until the guest took it, so the
   * backend must not reuse the buffer. Call it only while input is resumed (see
   * {@link PortBackend.resumeInput}); the device holds at most a little beyond what it asked for
   * and counts the rest as dropped.
   */
  input(data: Uint8Array): void;
  /**
   * The host side of the port was opened or closed (a socket client connected or went away).
   * Sent to the guest as PORT_OPEN on multiport devices; while closed, guest output is dropped.
   */
  setConnected(connected: boolean): void;
  /** The backend's unsent data fell below its limit after a write returned `'full'`. */
  drained(): void;
  /** The terminal behind the port changed size (console ports only). */
  resize(size: ConsoleSize): void;
  /** A diagnostic message (I/O errors). */
  log(message: string): void;
}

/**
 * The host side of one console port.
 *
 * Contract: {@link attach} is called once, before anything else; input starts paused (the backend
 * calls {@link BackendHost.input} only after {@link resumeInput}), and the backend reports its
 * initial connection state and size from `attach`. No method may throw.
 *
 * @example
 * ```ts
 * const backend: PortBackend = new StreamBackend({ input: socket, output: socket });
 * const device = new ConsoleDevice({ backend });
 * ```
 */
export interface PortBackend {
  /** Connects the backend to its port. */
  attach(host: BackendHost): void;
  /** Guest output. The data is a copy the backend may keep. */
  write(data: Uint8Array): WriteResult;
  /** The guest has no buffers for more input (or cannot take input now): stop calling `input`. */
  pauseInput(): void;
  /** The guest can take input again. */
  resumeInput(): void;
  /** The guest opened (`true`) or closed the port (multiport PORT_OPEN from the driver). */
  guestConnected?(open: boolean): void;
  /**
   * Releases what the backend holds (restores the terminal, closes the server). Called when the
   * port is removed or the device closed; the backend is not used afterwards.
   */
  close(): Promise<void>;
}
