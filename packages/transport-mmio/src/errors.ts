/**
 * Errors of @virtkit/transport-mmio. They are thrown only to the VMM that sets a transport up
 * (a device it cannot carry, a bad option, a notify address for a queue that does not exist);
 * a guest's register access never throws, it is counted (see `MmioTransport.violations`).
 */

import { VirtkitError } from '@virtkit/core';

/** Codes of {@link MmioTransportError}. */
export type MmioTransportErrorCode = 'MMIO_UNSUPPORTED_FEATURE' | 'MMIO_INVALID_OPTION';

/** A virtio-mmio transport could not be set up as asked. */
export class MmioTransportError extends VirtkitError {
  override readonly name = 'MmioTransportError';
  declare readonly code: MmioTransportErrorCode;

  constructor(code: MmioTransportErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
