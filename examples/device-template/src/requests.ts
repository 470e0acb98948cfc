/**
 * Parsing sample-device requests from descriptor chains. A request is a byte stream (§2.6.4):
 * the device-readable part is an 8-byte header `{ le16 type; le16 reserved; le32 length; }`
 * followed by exactly `length` payload bytes; the device-writable part starts with room for the
 * 8-byte response. Descriptor boundaries mean nothing, so a header split over descriptors is fine.
 *
 * Parsing never throws for any chain a queue can hand out (their segments were checked against
 * guest memory when popped). A malformed request becomes an immediate answer plus a violation for
 * the device to count.
 */

import type { DescriptorChain } from '@virtkit/core';
import {
  REQUEST_HEADER_SIZE,
  RESPONSE_SIZE,
  type SampleStatus,
  type SampleViolationCode,
  SampleStatus as Status,
  SampleRequestType as Type,
} from './constants.js';

/** What parsing needs to know: the device's limits and the negotiated features. */
export interface RequestRules {
  /** Largest `length` accepted (`max_payload` in the config space). */
  readonly maxPayload: number;
  /** VIRTIO_SAMPLE_F_ADLER32 was negotiated. */
  readonly adler32: boolean;
}

/** What a request asks the device to do. */
export type SampleRequest =
  | {
      readonly type: 'checksum';
      readonly algorithm: 'crc32' | 'adler32';
      /** Zero-copy views of the payload in guest memory, in order. */
      readonly payload: Uint8Array[];
    }
  /** Nothing to compute: answer at once with this status. */
  | { readonly type: 'answer'; readonly status: SampleStatus };

/** A guest mistake found while parsing, to be counted as a protocol violation. */
export interface RequestViolation {
  readonly code: SampleViolationCode;
  readonly message: string;
}

/** A parsed request. */
export interface ParsedRequest {
  readonly request: SampleRequest;
  /** False when the chain has no room for a response: return it with a used length of 0. */
  readonly canRespond: boolean;
  /** Set when the guest got something wrong. */
  readonly violation?: RequestViolation;
}

/**
 * Parses the request in `chain`.
 *
 * @example
 * ```ts
 * const { request, canRespond } = parseRequest(chain, { maxPayload: 65536, adler32: true });
 * if (request.type === 'checksum') answer(crc32(request.payload));
 * ```
 */
export function parseRequest(chain: DescriptorChain, rules: RequestRules): ParsedRequest {
  const malformed = (code: SampleViolationCode, message: string): ParsedRequest => ({
    request: { type: 'answer', status: Status.IOERR },
    canRespond: true,
    violation: { code, message },
  });
  if (chain.writableLength < RESPONSE_SIZE) {
    return {
      request: { type: 'answer', status: Status.IOERR },
      canRespond: false,
      violation: {
        code: 'SAMPLE_NO_RESPONSE',
        message: `request has ${chain.writableLength} device-writable bytes, less than the ${RESPONSE_SIZE}-byte response`,
      },
    };
  }
  if (chain.readableLength < REQUEST_HEADER_SIZE) {
    return malformed(
      'SAMPLE_HEADER_TOO_SHORT',
      `request has ${chain.readableLength} device-readable bytes, less than the ${REQUEST_HEADER_SIZE}-byte header`,
    );
  }
  const reader = chain.reader();
  const type = reader.readU16();
  const reserved = reader.readU16();
  const length = reader.readU32();
  if (reserved !== 0) {
    return malformed('SAMPLE_RESERVED_NONZERO', `request header has reserved field ${reserved}`);
  }
  const available = chain.readableLength - REQUEST_HEADER_SIZE;
  if (length !== available) {
    return malformed(
      'SAMPLE_LENGTH_MISMATCH',
      `request header says ${length} payload bytes, the chain has ${available}`,
    );
  }
  if (length > rules.maxPayload) {
    return malformed(
      'SAMPLE_PAYLOAD_TOO_LARGE',
      `request payload of ${length} bytes exceeds max_payload ${rules.maxPayload}`,
    );
  }
  // An unknown type is not a guest mistake: a newer driver may know more types (§2.2).
  switch (type) {
    case Type.CRC32:
      return checksum('crc32', reader.views(length));
    case Type.ADLER32:
      return rules.adler32
        ? checksum('adler32', reader.views(length))
        : { request: { type: 'answer', status: Status.UNSUPP }, canRespond: true };
    default:
      return { request: { type: 'answer', status: Status.UNSUPP }, canRespond: true };
  }
}

function checksum(algorithm: 'crc32' | 'adler32', payload: Uint8Array[]): ParsedRequest {
  return { request: { type: 'checksum', algorithm, payload }, canRespond: true };
}

/** Encodes a response `{ u8 status; u8 reserved[3]; le32 checksum; }`. */
export function encodeResponse(status: SampleStatus, checksum: number): Uint8Array {
  const bytes = new Uint8Array(RESPONSE_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint8(0, status);
  view.setUint32(4, status === Status.OK ? checksum : 0, true);
  return bytes;
}
