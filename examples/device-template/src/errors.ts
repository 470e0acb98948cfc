/**
 * Errors of the sample device package, thrown to the VMM (options that cannot work). A guest's
 * mistake is never one of these: it becomes a protocol violation and a status (see `requests.ts`).
 */

import { VirtkitError } from '@virtkit/core';

/** Codes of {@link SampleError}. */
export type SampleErrorCode =
  /** Options that cannot work (a queue size that is not a power of two...). */
  'SAMPLE_OPTIONS';

/** An error of the sample device package, with a {@link SampleErrorCode}. */
export class SampleError extends VirtkitError {
  override readonly name = 'SampleError';
  declare readonly code: SampleErrorCode;

  constructor(code: SampleErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
