/**
 * Errors of @virtkit/vhost-user. A front-end's protocol mistake is answered (an error reply, or
 * closing its connection) and reported as a `protocol-error` event; it never escapes the event
 * loop. These errors are thrown to the code that creates and drives a backend.
 */

import { VirtkitError } from '@virtkit/core';

/** Codes of {@link VhostUserError}. */
export type VhostUserErrorCode =
  /** The front-end sent a message that breaks the protocol (size, index, state). */
  | 'VHOST_USER_PROTOCOL'
  /** A memory table or ring address that cannot be used. */
  | 'VHOST_USER_MEMORY'
  /** The backend was used in a way its state does not allow (listening twice, closed). */
  | 'VHOST_USER_STATE'
  /** A socket could not be set up. */
  | 'VHOST_USER_SOCKET';

/**
 * An error of the vhost-user backend.
 *
 * @example
 * ```ts
 * try {
 *   await backend.listen('/run/vhost.sock');
 * } catch (error) {
 *   if (error instanceof VhostUserError && error.code === 'VHOST_USER_SOCKET') console.error(error.message);
 * }
 * ```
 */
export class VhostUserError extends VirtkitError {
  override readonly name = 'VhostUserError';
  declare readonly code: VhostUserErrorCode;

  constructor(code: VhostUserErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
