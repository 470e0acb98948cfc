/**
 * Errors of @virtkit/device-console, thrown to the VMM (never to the guest: guest mistakes are
 * counted protocol violations).
 */

import { VirtkitError } from '@virtkit/core';

/** Codes of {@link ConsoleError}. */
export type ConsoleErrorCode =
  /** Options that do not describe a usable console. */
  | 'CONSOLE_OPTIONS'
  /** A port could not be added or removed (id taken, no room, port 0). */
  | 'CONSOLE_PORT'
  /** A backend could not be opened (file, socket). */
  | 'CONSOLE_BACKEND'
  /** The device was used after {@link ConsoleDevice.close}. */
  | 'CONSOLE_CLOSED';

/** An error of the console device or one of its backends. */
export class ConsoleError extends VirtkitError {
  override readonly name = 'ConsoleError';
  declare readonly code: ConsoleErrorCode;

  constructor(code: ConsoleErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
