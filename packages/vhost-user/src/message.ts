/**
 * vhost-user messages: the 12-byte header, payload layouts and their checked decoding. Every
 * decoder checks the payload size first, so a short or oversized payload from a front-end is a
 * {@link VhostUserError} with a sentence saying what was wrong, never an out-of-range read.
 * Numbers are little-endian (the protocol uses the host's order; Virtkit runs on x86_64).
 */

import {
  CONFIG_HEADER_SIZE,
  FLAG_REPLY,
  HEADER_SIZE,
  INFLIGHT_DESCRIPTION_FIELDS,
  INFLIGHT_DESCRIPTION_SIZE,
  MAX_CONFIG_SIZE,
  MAX_MEMORY_REGIONS,
  MEMORY_REGION_SIZE,
  requestName,
  U64_SIZE,
  VERSION,
  VRING_ADDR_SIZE,
  VRING_STATE_SIZE,
} from './constants.js';
import { VhostUserError } from './errors.js';

/** One message as received: header fields, the payload bytes, and descriptors that came with it. */
export interface Message {
  readonly request: number;
  readonly flags: number;
  /** Exactly `size` bytes. */
  readonly payload: Uint8Array;
  /** Descriptors received with the message; the receiver owns (and must close) them. */
  readonly fds: number[];
}

/** A vring state description: index and a number (size, base, enable). */
export interface VringState {
  readonly index: number;
  readonly num: number;
}

/** A vring address description: ring addresses in the front-end's address space. */
export interface VringAddress {
  readonly index: number;
  readonly flags: number;
  readonly desc: bigint;
  readonly used: bigint;
  readonly avail: bigint;
  readonly log: bigint;
}

/** One memory region of SET_MEM_TABLE. */
export interface MemoryRegionDescription {
  readonly guestAddress: bigint;
  readonly size: bigint;
  readonly userAddress: bigint;
  readonly mmapOffset: bigint;
}

/** GET/SET_CONFIG payload. */
export interface ConfigAccess {
  readonly offset: number;
  readonly size: number;
  readonly flags: number;
  readonly data: Uint8Array;
}

/** GET/SET_INFLIGHT_FD payload. */
export interface InflightDescription {
  readonly mmapSize: bigint;
  readonly mmapOffset: bigint;
  readonly numQueues: number;
  readonly queueSize: number;
}

function view(payload: Uint8Array): DataView {
  return new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
}

function expectSize(message: Message, size: number, what: string): DataView {
  if (message.payload.length !== size) {
    throw new VhostUserError(
      'VHOST_USER_PROTOCOL',
      `${requestName(message.request)} carries ${message.payload.length} payload bytes, expected ${size} (${what})`,
    );
  }
  return view(message.payload);
}

/** Decodes a u64 payload. */
export function decodeU64(message: Message): bigint {
  return expectSize(message, U64_SIZE, 'a u64').getBigUint64(0, true);
}

/** Decodes a vring state description. */
export function decodeVringState(message: Message): VringState {
  const data = expectSize(message, VRING_STATE_SIZE, 'a vring state');
  return { index: data.getUint32(0, true), num: data.getUint32(4, true) };
}

/** Decodes a vring address description. */
export function decodeVringAddress(message: Message): VringAddress {
  const data = expectSize(message, VRING_ADDR_SIZE, 'a vring address description');
  return {
    index: data.getUint32(0, true),
    flags: data.getUint32(4, true),
    desc: data.getBigUint64(8, true),
    used: data.getBigUint64(16, true),
    avail: data.getBigUint64(24, true),
    log: data.getBigUint64(32, true),
  };
}

/**
 * Decodes a memory table: `nregions` (u32), padding, then that many 32-byte regions. The payload
 * may be longer (the C struct has room for 8 regions) but not shorter.
 */
export function decodeMemoryTable(message: Message): MemoryRegionDescription[] {
  const payload = message.payload;
  if (payload.length < 8) {
    throw new VhostUserError(
      'VHOST_USER_PROTOCOL',
      `SET_MEM_TABLE carries ${payload.length} payload bytes, too short for a region count`,
    );
  }
  const data = view(payload);
  const count = data.getUint32(0, true);
  if (count === 0 || count > MAX_MEMORY_REGIONS) {
    throw new VhostUserError(
      'VHOST_USER_PROTOCOL',
      `SET_MEM_TABLE announces ${count} regions, expected 1 to ${MAX_MEMORY_REGIONS}`,
    );
  }
  if (payload.length < 8 + count * MEMORY_REGION_SIZE) {
    throw new VhostUserError(
      'VHOST_USER_PROTOCOL',
      `SET_MEM_TABLE announces ${count} regions but carries only ${payload.length} payload bytes`,
    );
  }
  const regions: MemoryRegionDescription[] = [];
  for (let i = 0; i < count; i++) {
    const at = 8 + i * MEMORY_REGION_SIZE;
    regions.push({
      guestAddress: data.getBigUint64(at, true),
      size: data.getBigUint64(at + 8, true),
      userAddress: data.getBigUint64(at + 16, true),
      mmapOffset: data.getBigUint64(at + 24, true),
    });
  }
  return regions;
}

/** Decodes a GET/SET_CONFIG payload: 12-byte header, then `size` bytes (at most 256). */
export function decodeConfig(message: Message): ConfigAccess {
  const payload = message.payload;
  if (payload.length < CONFIG_HEADER_SIZE) {
    throw new VhostUserError(
      'VHOST_USER_PROTOCOL',
      `${requestName(message.request)} carries ${payload.length} payload bytes, too short for a config header`,
    );
  }
  const data = view(payload);
  const offset = data.getUint32(0, true);
  const size = data.getUint32(4, true);
  const flags = data.getUint32(8, true);
  if (size > MAX_CONFIG_SIZE || payload.length !== CONFIG_HEADER_SIZE + size) {
    throw new VhostUserError(
      'VHOST_USER_PROTOCOL',
      `${requestName(message.request)} of ${size} config bytes carries ${payload.length - CONFIG_HEADER_SIZE} (at most ${MAX_CONFIG_SIZE})`,
    );
  }
  return { offset, size, flags, data: payload.subarray(CONFIG_HEADER_SIZE) };
}

/** Decodes a GET/SET_INFLIGHT_FD payload (24 bytes as QEMU sends it, or the 20 without padding). */
export function decodeInflight(message: Message): InflightDescription {
  const size = message.payload.length;
  const data = expectSize(
    message,
    size === INFLIGHT_DESCRIPTION_FIELDS ? size : INFLIGHT_DESCRIPTION_SIZE,
    'an inflight description',
  );
  return {
    mmapSize: data.getBigUint64(0, true),
    mmapOffset: data.getBigUint64(8, true),
    numQueues: data.getUint16(16, true),
    queueSize: data.getUint16(18, true),
  };
}

/** Encodes a message: header (version 1 plus `flags`) and payload. */
export function encodeMessage(request: number, flags: number, payload?: Uint8Array): Uint8Array {
  const size = payload?.length ?? 0;
  const bytes = new Uint8Array(HEADER_SIZE + size);
  const data = view(bytes);
  data.setUint32(0, request, true);
  data.setUint32(4, flags | VERSION, true);
  data.setUint32(8, size, true);
  if (payload) bytes.set(payload, HEADER_SIZE);
  return bytes;
}

/** Encodes a reply to `request` carrying `payload`. */
export function encodeReply(request: number, payload?: Uint8Array): Uint8Array {
  return encodeMessage(request, FLAG_REPLY, payload);
}

/** A u64 payload. */
export function u64Payload(value: bigint | number): Uint8Array {
  const bytes = new Uint8Array(U64_SIZE);
  view(bytes).setBigUint64(0, BigInt.asUintN(64, BigInt(value)), true);
  return bytes;
}

/** A vring state payload. */
export function vringStatePayload(index: number, num: number): Uint8Array {
  const bytes = new Uint8Array(VRING_STATE_SIZE);
  const data = view(bytes);
  data.setUint32(0, index >>> 0, true);
  data.setUint32(4, num >>> 0, true);
  return bytes;
}

/** A vring address payload. */
export function vringAddressPayload(address: VringAddress): Uint8Array {
  const bytes = new Uint8Array(VRING_ADDR_SIZE);
  const data = view(bytes);
  data.setUint32(0, address.index >>> 0, true);
  data.setUint32(4, address.flags >>> 0, true);
  data.setBigUint64(8, address.desc, true);
  data.setBigUint64(16, address.used, true);
  data.setBigUint64(24, address.avail, true);
  data.setBigUint64(32, address.log, true);
  return bytes;
}

/** A memory table payload. */
export function memoryTablePayload(regions: readonly MemoryRegionDescription[]): Uint8Array {
  const bytes = new Uint8Array(8 + regions.length * MEMORY_REGION_SIZE);
  const data = view(bytes);
  data.setUint32(0, regions.length, true);
  regions.forEach((region, i) => {
    const at = 8 + i * MEMORY_REGION_SIZE;
    data.setBigUint64(at, region.guestAddress, true);
    data.setBigUint64(at + 8, region.size, true);
    data.setBigUint64(at + 16, region.userAddress, true);
    data.setBigUint64(at + 24, region.mmapOffset, true);
  });
  return bytes;
}

/** A GET/SET_CONFIG payload. */
export function configPayload(offset: number, flags: number, data: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(CONFIG_HEADER_SIZE + data.length);
  const header = view(bytes);
  header.setUint32(0, offset >>> 0, true);
  header.setUint32(4, data.length, true);
  header.setUint32(8, flags >>> 0, true);
  bytes.set(data, CONFIG_HEADER_SIZE);
  return bytes;
}

/** A GET/SET_INFLIGHT_FD payload. */
export function inflightPayload(description: InflightDescription): Uint8Array {
  const bytes = new Uint8Array(INFLIGHT_DESCRIPTION_SIZE);
  const data = view(bytes);
  data.setBigUint64(0, description.mmapSize, true);
  data.setBigUint64(8, description.mmapOffset, true);
  data.setUint16(16, description.numQueues, true);
  data.setUint16(18, description.queueSize, true);
  return bytes;
}
