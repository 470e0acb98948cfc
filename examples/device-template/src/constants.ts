/**
 * Constants of the sample device. A real device transcribes these from its section of the OASIS
 * "Virtual I/O Device (VIRTIO) Version 1.2" spec (§5.x) and checks them against Linux
 * `include/uapi/linux/virtio_<name>.h`; every group names its section. The sample device is not in
 * the spec: its "section" is the protocol described in this file and in README.md.
 */

/**
 * Device type of the sample device: 56, which virtio leaves unassigned.
 *
 * The spec (§5, mirrored in Linux `virtio_ids.h`) sets no range aside for experiments. Its IDs
 * are handed out from 1 upwards and reach the mid-40s (45 is SPI); crosvm's unofficial ones count
 * down from 63 (63 WL, 62 TPM, 61 PVCLOCK). The ID must stay below 64 all the same: modern
 * virtio-pci exposes type T as PCI device 0x1040 + T (§4.1.2), and Linux's virtio-pci binds only
 * 0x1000–0x107f (`vp_modern_probe`), so a type of 64 or more is invisible to a Linux guest on PCI
 * (the conformance suite's PCI driver refuses it the same way). 56 sits between the two ends, where
 * neither the spec nor crosvm is likely to arrive soon. It is still not reserved: a real device
 * uses the ID the spec assigns it (`DeviceType` in `@virtkit/core`), and a new one asks the virtio
 * TC for one before it ships.
 */
export const SAMPLE_DEVICE_TYPE = 56;

/** Device-specific feature bits (bits 0–23; 24–40 are the transport's, §6). */
export const SampleFeature = {
  /** The device also computes Adler-32 ({@link SampleRequestType.ADLER32}). */
  ADLER32: 0,
} as const;

/** Queue indexes. */
export const SampleQueue = {
  /** The only queue: requests in, answers out. */
  REQUEST: 0,
} as const;

/** `type` of a request header. */
export const SampleRequestType = {
  /** CRC-32 (IEEE 802.3, reflected, as zlib's `crc32`) of the payload. */
  CRC32: 0,
  /** Adler-32 (RFC 1950) of the payload; only with {@link SampleFeature.ADLER32}. */
  ADLER32: 1,
} as const;

/** `status` of a response. */
export const SampleStatus = {
  OK: 0,
  /** The request was malformed (a violation was counted). */
  IOERR: 1,
  /** Unknown request type, or one whose feature was not negotiated. */
  UNSUPP: 2,
} as const;
/** A {@link SampleStatus} value. */
export type SampleStatus = (typeof SampleStatus)[keyof typeof SampleStatus];

/**
 * Size of the device-readable request header `{ le16 type; le16 reserved; le32 length; }`.
 * `length` payload bytes follow it; `reserved` must be 0.
 */
export const REQUEST_HEADER_SIZE = 8;

/**
 * Size of the device-writable response `{ u8 status; u8 reserved[3]; le32 checksum; }`, written to
 * the first device-writable bytes of the chain. `checksum` is 0 unless `status` is OK.
 */
export const RESPONSE_SIZE = 8;

/** Byte offsets of the configuration space `struct virtio_sample_config`. */
export const SampleConfig = {
  /** le32: largest payload the device accepts, in bytes. */
  MAX_PAYLOAD: 0,
  /** Size of the whole structure. */
  SIZE: 4,
} as const;

/** Device-specific protocol violation codes this device reports (`ctx.reportViolation`). */
export type SampleViolationCode =
  /** The chain has fewer device-writable bytes than a response: the device cannot answer. */
  | 'SAMPLE_NO_RESPONSE'
  /** Fewer device-readable bytes than the 8-byte header. */
  | 'SAMPLE_HEADER_TOO_SHORT'
  /** The header's `reserved` field is not 0. */
  | 'SAMPLE_RESERVED_NONZERO'
  /** The header's `length` is not the number of readable bytes after the header. */
  | 'SAMPLE_LENGTH_MISMATCH'
  /** `length` is larger than the `max_payload` the config space announces. */
  | 'SAMPLE_PAYLOAD_TOO_LARGE';
