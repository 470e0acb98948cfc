/**
 * Errors of @virtkit/core. Every error is a {@link VirtkitError} with a `code` discriminant.
 * A guest's mistake is not an error that escapes a processing loop: it becomes a
 * {@link ProtocolViolation} that is counted (see `violations.ts`).
 */

/** Codes of errors thrown by core to its callers (VMM and device authors, not the guest). */
export type VirtkitErrorCode =
  | 'GUEST_MEMORY_OUT_OF_RANGE'
  | 'GUEST_MEMORY_LAYOUT'
  | 'QUEUE_CONFIG'
  | 'INVALID_OPTIONS'
  | 'PLUGIN_INCOMPATIBLE'
  | 'PLUGIN_DUPLICATE'
  | 'PLUGIN_UNKNOWN'
  | 'PLUGIN_INVALID'
  | 'DEVICE_STATE'
  | 'DRIVER';

/** Base class of every error thrown by Virtkit packages. */
export class VirtkitError extends Error {
  override readonly name: string = 'VirtkitError';
  /** What went wrong, for programs (see {@link VirtkitErrorCode}; other packages add their own). */
  readonly code: VirtkitErrorCode | (string & {});

  constructor(
    code: VirtkitErrorCode | (string & {}),
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.code = code;
  }
}

/** An access outside guest memory, or an address that is not a safe integer. */
export class GuestMemoryError extends VirtkitError {
  override readonly name = 'GuestMemoryError';
  /** Guest address of the refused access. */
  readonly address: number | bigint;
  /** Bytes of the refused access. */
  readonly length: number;

  constructor(address: number | bigint, length: number, message?: string) {
    super(
      'GUEST_MEMORY_OUT_OF_RANGE',
      message ??
        `guest memory access of ${length} bytes at ${formatAddress(address)} is outside guest RAM`,
    );
    this.address = address;
    this.length = length;
  }
}

/** A queue configuration (size, ring addresses) that cannot be used. */
export class QueueConfigError extends VirtkitError {
  override readonly name = 'QueueConfigError';
  constructor(message: string) {
    super('QUEUE_CONFIG', message);
  }
}

/** Options given to a device plugin that do not match its schema. */
export class OptionsError extends VirtkitError {
  override readonly name = 'OptionsError';
  constructor(message: string) {
    super('INVALID_OPTIONS', message);
  }
}

/** Registration or lookup of a device plugin failed. */
export class PluginError extends VirtkitError {
  override readonly name = 'PluginError';
}

/** Formats a guest address as hex for messages. */
export function formatAddress(address: number | bigint): string {
  return `0x${address.toString(16)}`;
}

/**
 * Kinds of guest protocol violations. Each is counted per device; most make the affected queue
 * stop and the device report DEVICE_NEEDS_RESET (virtio 1.2 §2.1.2).
 */
export type ViolationCode =
  // Ring structure (split §2.7, packed §2.8)
  | 'AVAIL_INDEX_JUMP'
  | 'HEAD_OUT_OF_RANGE'
  | 'HEAD_IN_FLIGHT'
  | 'NEXT_OUT_OF_RANGE'
  | 'CHAIN_TOO_LONG'
  | 'CHAIN_TOO_LARGE'
  | 'DESCRIPTOR_OUT_OF_MEMORY'
  | 'READABLE_AFTER_WRITABLE'
  | 'INDIRECT_NOT_NEGOTIATED'
  | 'INDIRECT_NESTED'
  | 'INDIRECT_WITH_NEXT'
  | 'INDIRECT_BAD_LENGTH'
  | 'INDIRECT_OUT_OF_MEMORY'
  | 'RING_OUT_OF_MEMORY'
  | 'BUFFER_ID_OUT_OF_RANGE'
  | 'BUFFER_ID_IN_USE'
  | 'USED_LENGTH_TOO_LARGE'
  // Configuration and status (§2.1, §3.1, transports §4)
  | 'STATUS_ORDER'
  | 'STATUS_CLEARED_BITS'
  | 'FEATURES_AFTER_FEATURES_OK'
  | 'FEATURES_NOT_ACCEPTED'
  | 'QUEUE_CONFIG_AFTER_DRIVER_OK'
  | 'QUEUE_SIZE_INVALID'
  | 'QUEUE_ADDRESS_INVALID'
  | 'QUEUE_INDEX_INVALID'
  | 'CONFIG_ACCESS_OUT_OF_RANGE'
  | 'CONFIG_WRITE_READ_ONLY'
  | 'NOTIFY_BEFORE_DRIVER_OK'
  | 'REGISTER_ACCESS_INVALID'
  // Device requests (device-specific; devices may add their own)
  | 'REQUEST_MALFORMED'
  | (string & {});

/** One guest protocol violation. */
export interface ProtocolViolation {
  /** Which rule the guest broke. */
  readonly code: ViolationCode;
  /** Sentence-style, saying what the guest did ("descriptor chain longer than queue size 256"). */
  readonly message: string;
  /** The queue it happened on, when it happened on one. */
  readonly queue?: number;
  /** True if the device must be reset by the driver before it can be used again. */
  readonly needsReset: boolean;
}

/** Receives protocol violations. Implementations must not throw. */
export type ViolationSink = (violation: ProtocolViolation) => void;
