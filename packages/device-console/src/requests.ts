/**
 * Control messages (§5.3.6.2): parsing what the driver sends on the control transmitq, and
 * encoding what the device sends on the control receiveq. Data queues carry raw bytes and need
 * no parsing.
 */

import type { DescriptorChain } from '@virtkit/core';
import {
  CONTROL_EVENT_NAMES,
  CONTROL_HEADER_SIZE,
  ControlEvent,
  type ResizeLayout,
} from './constants.js';

/** A control message: `struct virtio_console_control` and, for some events, a payload. */
export interface ControlMessage {
  /** Port number (`NO_PORT_ID` for DEVICE_READY). */
  readonly id: number;
  readonly event: number;
  readonly value: number;
  /** Bytes after the header: the name of PORT_NAME, the size of RESIZE; empty otherwise. */
  readonly payload: Uint8Array;
}

/** Result of reading a driver's control message: the message, or why it is malformed. */
export type ParsedControl =
  | { readonly ok: true; readonly message: ControlMessage }
  | { readonly ok: false; readonly reason: string };

/**
 * Reads the control message a driver placed in a control transmitq chain. Only the header is
 * read: no driver → device event carries a payload, and a chain may be up to 4 GiB long.
 */
export function readControlMessage(chain: DescriptorChain): ParsedControl {
  if (chain.readableLength < CONTROL_HEADER_SIZE) {
    return {
      ok: false,
      reason: `control message of ${chain.readableLength} bytes is shorter than its ${CONTROL_HEADER_SIZE}-byte header`,
    };
  }
  return { ok: true, message: decodeControlMessage(chain.reader().readBytes(CONTROL_HEADER_SIZE)) };
}

/** Decodes a control message from bytes (header, then the rest as payload). */
export function decodeControlMessage(bytes: Uint8Array): ControlMessage {
  if (bytes.length < CONTROL_HEADER_SIZE) {
    throw new RangeError(`control message needs ${CONTROL_HEADER_SIZE} bytes, got ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    id: view.getUint32(0, true),
    event: view.getUint16(4, true),
    value: view.getUint16(6, true),
    payload: bytes.slice(CONTROL_HEADER_SIZE),
  };
}

/** Encodes a control message: the 8-byte little-endian header followed by `payload`. */
export function encodeControlMessage(
  id: number,
  event: number,
  value: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array {
  const bytes = new Uint8Array(CONTROL_HEADER_SIZE + payload.length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, id >>> 0, true);
  view.setUint16(4, event & 0xffff, true);
  view.setUint16(6, value & 0xffff, true);
  bytes.set(payload, CONTROL_HEADER_SIZE);
  return bytes;
}

/** A terminal size in character cells. */
export interface ConsoleSize {
  readonly cols: number;
  readonly rows: number;
}

/** Clamps a size to the 16-bit fields it travels in. */
export function clampSize(size: ConsoleSize): ConsoleSize {
  const clamp = (n: number) =>
    Number.isFinite(n) ? Math.min(Math.max(Math.trunc(n), 0), 0xffff) : 0;
  return { cols: clamp(size.cols), rows: clamp(size.rows) };
}

/** A RESIZE message for port `id`, its two 16-bit fields in `layout` order. */
export function encodeResize(id: number, size: ConsoleSize, layout: ResizeLayout): Uint8Array {
  const { cols, rows } = clampSize(size);
  const payload = new Uint8Array(4);
  const view = new DataView(payload.buffer);
  view.setUint16(0, layout === 'rows-cols' ? rows : cols, true);
  view.setUint16(2, layout === 'rows-cols' ? cols : rows, true);
  return encodeControlMessage(id, ControlEvent.RESIZE, 0, payload);
}

/** Reads a RESIZE payload written in `layout` order (for tests and guest-side tools). */
export function decodeResize(payload: Uint8Array, layout: ResizeLayout): ConsoleSize {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const first = view.getUint16(0, true);
  const second = view.getUint16(2, true);
  return layout === 'rows-cols' ? { rows: first, cols: second } : { cols: first, rows: second };
}

const NAME_ENCODER = new TextEncoder();
/** Longest port name, in UTF-8 bytes (a name travels in one page-sized control buffer in Linux). */
export const MAX_NAME_BYTES = 255;

/**
 * Checks a port name: 1 to {@link MAX_NAME_BYTES} UTF-8 bytes, no control characters, no `/`
 * (udev makes `/dev/virtio-ports/NAME` from it) and no whitespace. Returns a sentence saying what
 * is wrong, or `undefined`.
 */
export function checkPortName(name: string): string | undefined {
  const length = NAME_ENCODER.encode(name).length;
  if (length === 0 || length > MAX_NAME_BYTES) {
    return `port name '${name}' must be 1 to ${MAX_NAME_BYTES} UTF-8 bytes long`;
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (/[\u0000-\u0020\u007f/]/.test(name)) {
    return `port name '${name}' must not contain spaces, control characters or '/'`;
  }
  return undefined;
}

/**
 * A PORT_NAME message. The spec sends the UTF-8 name without a terminator; Linux takes the length
 * from the used length and also accepts the NUL that QEMU appends.
 */
export function encodePortName(id: number, name: string): Uint8Array {
  return encodeControlMessage(id, ControlEvent.PORT_NAME, 1, NAME_ENCODER.encode(name));
}

/** A control event's name for messages (`event 9` for unknown ones). */
export function controlEventName(event: number): string {
  return CONTROL_EVENT_NAMES[event] ?? `event ${event}`;
}
