/**
 * Errors of @virtkit/device-net, thrown to the VMM (never for a guest's mistake, which is a
 * counted protocol violation). Each has a `code`.
 */

import { VirtkitError } from '@virtkit/core';

/** Codes of {@link NetError}. */
export type NetErrorCode =
  /** Device options that cannot work (queue pairs, MTU, MAC, backend channels). */
  | 'NET_INVALID_OPTIONS'
  /** A backend could not be opened or failed (TAP ioctl, socket bind/listen). */
  | 'NET_BACKEND'
  /** The device or backend was closed. */
  | 'NET_CLOSED';

/** An error of the network device or one of its backends. */
export class NetError extends VirtkitError {
  override readonly name = 'NetError';
  declare readonly code: NetErrorCode;

  constructor(code: NetErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
