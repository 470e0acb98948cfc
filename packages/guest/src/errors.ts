/**
 * Errors of @virtkit/guest. Every error is a {@link GuestError} with a `code` discriminant; the
 * message says what is missing or wrong and, where there is one, what to do about it.
 */

/** Codes of errors thrown by @virtkit/guest. */
export type GuestErrorCode =
  /** An option given to a function (or a CLI argument) that cannot be used. */
  | 'INVALID_OPTIONS'
  /** A program this package runs (apt-get, dpkg-deb, xz, zstd) is not on PATH. */
  | 'TOOL_MISSING'
  /** The Debian archive keyring needed to verify downloads is missing. */
  | 'KEYRING_MISSING'
  /** A program this package ran exited with an error. */
  | 'COMMAND_FAILED'
  /** A Debian package does not have the expected shape (no kernel, no modules directory...). */
  | 'PACKAGE_LAYOUT'
  /** A kernel module that was asked for is neither a module nor built into the kernel. */
  | 'MODULE_NOT_FOUND'
  /** Module dependencies that cannot be ordered (a cycle) or a module file that is not ELF64. */
  | 'MODULE_INVALID'
  /** buildInitramfs was called for a cache that prepareGuest has not completed. */
  | 'GUEST_NOT_PREPARED'
  /** Another process held the cache lock for too long. */
  | 'CACHE_LOCKED';

/** Base class of every error thrown by @virtkit/guest. */
export class GuestError extends Error {
  override readonly name = 'GuestError';
  readonly code: GuestErrorCode;

  constructor(code: GuestErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
