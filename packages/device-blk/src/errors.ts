/**
 * Errors of @virtkit/device-blk, thrown to the VMM (bad options, an image that cannot be used, a
 * backend used after close). A guest's mistake is never one of these: it becomes a protocol
 * violation and a status byte (see `requests.ts`).
 */

import { VirtkitError } from '@virtkit/core';

/** Codes of {@link BlockError}. */
export type BlockErrorCode =
  /** The image size is not a positive multiple of the sector (or logical block) size. */
  | 'BLK_IMAGE_SIZE'
  /** The image could not be opened or inspected. */
  | 'BLK_IMAGE_OPEN'
  /** Options that do not fit together (e.g. `direct` without the Linux bindings). */
  | 'BLK_OPTIONS'
  /** A backend was asked for bytes outside `[0, capacity)`: a bug in the caller, refused. */
  | 'BLK_BACKEND_RANGE'
  /** A write to a backend opened read-only. */
  | 'BLK_BACKEND_READ_ONLY'
  /** A backend used after {@link BlockBackend.close}. */
  | 'BLK_BACKEND_CLOSED';

/** An error of the block device package, with a {@link BlockErrorCode}. */
export class BlockError extends VirtkitError {
  override readonly name = 'BlockError';
  declare readonly code: BlockErrorCode;

  constructor(code: BlockErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
