/**
 * Helpers the tests share: request encoding as a driver would do it, and an independent model of
 * the protocol's answers. Not exported from the package.
 */

import {
  REQUEST_HEADER_SIZE,
  RESPONSE_SIZE,
  SampleRequestType,
  SampleStatus,
} from './constants.js';

/** A request header `{ le16 type; le16 reserved; le32 length; }`. */
export function header(type: number, length: number, reserved = 0): Uint8Array {
  const bytes = new Uint8Array(REQUEST_HEADER_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, type, true);
  view.setUint16(2, reserved, true);
  view.setUint32(4, length, true);
  return bytes;
}

/** ASCII bytes of `text` (no TextEncoder: the package builds without DOM or Node types). */
export function ascii(text: string): Uint8Array {
  return Uint8Array.from(text, (ch) => ch.charCodeAt(0));
}

/** Concatenates byte arrays. */
export function concat(...parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** A decoded response. */
export interface Response {
  readonly status: number;
  readonly checksum: number;
}

/** Decodes the response at the start of `bytes`. */
export function decode(bytes: Uint8Array): Response {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { status: view.getUint8(0), checksum: view.getUint32(4, true) };
}

/** CRC-32 computed bit by bit, independently of the device's table-driven one. */
export function referenceCrc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** Adler-32 reduced at every byte, independently of the device's deferred reduction. */
export function referenceAdler32(bytes: Uint8Array): number {
  let a = 1;
  let b = 0;
  for (const byte of bytes) {
    a = (a + byte) % 65521;
    b = (b + a) % 65521;
  }
  return (b * 65536 + a) >>> 0;
}

/** What the protocol says the device answers to `readable`/`writable`. */
export interface Expected {
  /** Used length. */
  readonly len: number;
  /** The response, when `len` is not 0. */
  readonly response?: Response;
  /** True if the request is malformed (one violation counted). */
  readonly malformed: boolean;
}

/** The answer the protocol (constants.ts, README.md) predicts for a request. */
export function expectedAnswer(
  readable: Uint8Array,
  writableLength: number,
  rules: { maxPayload: number; adler32: boolean },
): Expected {
  if (writableLength < RESPONSE_SIZE) return { len: 0, malformed: true };
  const answer = (status: number, checksum = 0, malformed = false): Expected => ({
    len: RESPONSE_SIZE,
    response: { status, checksum },
    malformed,
  });
  if (readable.length < REQUEST_HEADER_SIZE) return answer(SampleStatus.IOERR, 0, true);
  const view = new DataView(readable.buffer, readable.byteOffset, readable.byteLength);
  const type = view.getUint16(0, true);
  const reserved = view.getUint16(2, true);
  const length = view.getUint32(4, true);
  const payload = readable.subarray(REQUEST_HEADER_SIZE);
  if (reserved !== 0 || length !== payload.length || length > rules.maxPayload) {
    return answer(SampleStatus.IOERR, 0, true);
  }
  if (type === SampleRequestType.CRC32) return answer(SampleStatus.OK, referenceCrc32(payload));
  if (type === SampleRequestType.ADLER32 && rules.adler32) {
    return answer(SampleStatus.OK, referenceAdler32(payload));
  }
  return answer(SampleStatus.UNSUPP);
}
