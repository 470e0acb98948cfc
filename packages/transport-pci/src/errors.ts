/**
 * Errors of @virtkit/transport-pci. They are thrown only to the VMM that builds a PCI topology
 * (a bad option, a slot already taken, a window too small for the BARs); a guest's register or
 * configuration access never throws, it is counted (see the `violations` counters).
 */

import { VirtkitError } from '@virtkit/core';

/** Codes of {@link PciTransportError}. */
export type PciTransportErrorCode =
  | 'PCI_INVALID_OPTION'
  | 'PCI_UNSUPPORTED_FEATURE'
  | 'PCI_SLOT_IN_USE'
  | 'PCI_RESOURCES_EXHAUSTED'
  | 'PCI_NO_SUCH_QUEUE';

/** A PCI function or root could not be set up as asked. */
export class PciTransportError extends VirtkitError {
  override readonly name = 'PciTransportError';
  declare readonly code: PciTransportErrorCode;

  constructor(code: PciTransportErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}
