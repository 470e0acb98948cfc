/**
 * Helpers for this package's tests: frame builders with independently computed checksums, the
 * ring-feature matrix every protocol test runs over, and shortcuts for control commands.
 * Not exported from the package.
 */

import { Feature, featureBit, type RingLayout } from '@virtkit/core';
import type { TestDriver } from '@virtkit/core/testing';
import { NET_HDR_SIZE, NetCtrl } from './constants.js';

export const VERSION_1 = featureBit(Feature.VERSION_1);
export const EVENT_IDX = featureBit(Feature.RING_EVENT_IDX);
export const INDIRECT = featureBit(Feature.RING_INDIRECT_DESC);

/** One ring configuration a protocol test runs under. */
export interface RingCase {
  readonly name: string;
  readonly layout: RingLayout;
  /** Ring feature bits to take away from the offer. */
  readonly without: bigint;
}

/** Both layouts, each with and without EVENT_IDX and INDIRECT_DESC. */
export const RING_CASES: readonly RingCase[] = (['split', 'packed'] as const).flatMap((layout) =>
  [
    { tag: 'event-idx+indirect', without: 0n },
    { tag: 'plain', without: EVENT_IDX | INDIRECT },
    { tag: 'event-idx', without: INDIRECT },
    { tag: 'indirect', without: EVENT_IDX },
  ].map(({ tag, without }) => ({ name: `${layout} ${tag}`, layout, without })),
);

/** Features a driver accepts: everything `offered` plus VERSION_1, minus `without`. */
export function accept(offered: bigint, without = 0n): bigint {
  return (offered | VERSION_1) & ~without;
}

export const GUEST_MAC = Uint8Array.of(0x52, 0x54, 0x00, 0x12, 0x34, 0x56);
export const PEER_MAC = Uint8Array.of(0x52, 0x54, 0x00, 0xab, 0xcd, 0xef);
export const BROADCAST = Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff);

/** A 12-byte virtio_net_hdr (all zero unless given). */
export function header(
  fields: Partial<
    Record<
      'flags' | 'gsoType' | 'hdrLen' | 'gsoSize' | 'csumStart' | 'csumOffset' | 'numBuffers',
      number
    >
  > = {},
): Uint8Array {
  const bytes = new Uint8Array(NET_HDR_SIZE);
  const view = new DataView(bytes.buffer);
  view.setUint8(0, fields.flags ?? 0);
  view.setUint8(1, fields.gsoType ?? 0);
  view.setUint16(2, fields.hdrLen ?? 0, true);
  view.setUint16(4, fields.gsoSize ?? 0, true);
  view.setUint16(6, fields.csumStart ?? 0, true);
  view.setUint16(8, fields.csumOffset ?? 0, true);
  view.setUint16(10, fields.numBuffers ?? 0, true);
  return bytes;
}

/** An Ethernet frame. `payloadLength` bytes of a recognisable pattern follow the header. */
export function ethernet(
  options: {
    dst?: Uint8Array;
    src?: Uint8Array;
    type?: number;
    payload?: Uint8Array;
    payloadLength?: number;
    vlan?: number;
  } = {},
): Uint8Array {
  const payload =
    options.payload ??
    Uint8Array.from({ length: options.payloadLength ?? 46 }, (_, i) => (i * 7 + 3) & 0xff);
  const tag = options.vlan === undefined ? 0 : 4;
  const frame = new Uint8Array(14 + tag + payload.length);
  frame.set(options.dst ?? GUEST_MAC, 0);
  frame.set(options.src ?? PEER_MAC, 6);
  const view = new DataView(frame.buffer);
  if (options.vlan !== undefined) {
    view.setUint16(12, 0x8100);
    view.setUint16(14, options.vlan);
  }
  view.setUint16(12 + tag, options.type ?? 0x88b5);
  frame.set(payload, 14 + tag);
  return frame;
}

/** Ones' complement sum of 16-bit big-endian words, the slow obvious way (for checking). */
export function onesComplementSum(bytes: Uint8Array, initial = 0): number {
  let sum = initial;
  for (let i = 0; i < bytes.length; i += 2) {
    sum += (bytes[i]! << 8) + (i + 1 < bytes.length ? bytes[i + 1]! : 0);
    sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  }
  return sum;
}

/** An IPv4 UDP or TCP frame. With `partial`, the L4 checksum holds only the pseudo-header sum. */
export function ipv4Frame(options: {
  protocol: 'udp' | 'tcp';
  src?: [number, number, number, number];
  dst?: [number, number, number, number];
  srcPort: number;
  dstPort: number;
  payloadLength?: number;
  partial?: boolean;
  macDst?: Uint8Array;
  macSrc?: Uint8Array;
}): { frame: Uint8Array; csumStart: number; csumOffset: number } {
  const l4Header = options.protocol === 'udp' ? 8 : 20;
  const data = Uint8Array.from({ length: options.payloadLength ?? 64 }, (_, i) => (i * 13) & 0xff);
  const ip = new Uint8Array(20 + l4Header + data.length);
  const v = new DataView(ip.buffer);
  v.setUint8(0, 0x45);
  v.setUint16(2, ip.length);
  v.setUint8(8, 64);
  v.setUint8(9, options.protocol === 'udp' ? 17 : 6);
  ip.set(options.src ?? [10, 0, 0, 2], 12);
  ip.set(options.dst ?? [10, 0, 0, 1], 16);
  v.setUint16(10, ~onesComplementSum(ip.subarray(0, 20)) & 0xffff);
  v.setUint16(20, options.srcPort);
  v.setUint16(22, options.dstPort);
  if (options.protocol === 'udp') v.setUint16(24, 8 + data.length);
  else v.setUint8(32, 0x50); // data offset 5 words
  ip.set(data, 20 + l4Header);
  const l4Length = l4Header + data.length;
  const pseudo = new Uint8Array(12);
  pseudo.set(ip.subarray(12, 20), 0);
  pseudo[9] = ip[9]!;
  new DataView(pseudo.buffer).setUint16(10, l4Length);
  const csumOffset = options.protocol === 'udp' ? 6 : 16;
  const pseudoSum = onesComplementSum(pseudo);
  if (options.partial) {
    v.setUint16(20 + csumOffset, pseudoSum);
  } else {
    const full = ~onesComplementSum(ip.subarray(20), pseudoSum) & 0xffff;
    v.setUint16(20 + csumOffset, full === 0 && options.protocol === 'udp' ? 0xffff : full);
  }
  const frame = ethernet({
    dst: options.macDst ?? GUEST_MAC,
    src: options.macSrc ?? PEER_MAC,
    type: 0x0800,
    payload: ip,
  });
  return { frame, csumStart: 14 + 20, csumOffset };
}

/** True if the frame's IPv4 L4 checksum verifies. */
export function l4ChecksumValid(frame: Uint8Array): boolean {
  const ip = frame.subarray(14);
  const l4 = ip.subarray(20, (ip[2]! << 8) | ip[3]!);
  const pseudo = new Uint8Array(12);
  pseudo.set(ip.subarray(12, 20), 0);
  pseudo[9] = ip[9]!;
  new DataView(pseudo.buffer).setUint16(10, l4.length);
  return onesComplementSum(l4, onesComplementSum(pseudo)) === 0xffff;
}

/** Sends a control command on queue `index`; resolves with the ack byte. */
export async function control(
  driver: TestDriver,
  index: number,
  cls: number,
  command: number,
  data: Uint8Array = new Uint8Array(0),
): Promise<number> {
  const reply = await driver.send(index, {
    readable: [Uint8Array.of(cls, command), ...(data.length > 0 ? [data] : [])],
    writable: [1],
  });
  if (reply.len !== 1) throw new Error(`control command answered with ${reply.len} bytes`);
  return reply.written[0]!;
}

/** The data of VIRTIO_NET_CTRL_MAC_TABLE_SET. */
export function macTables(unicast: Uint8Array[], multicast: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(8 + 6 * (unicast.length + multicast.length));
  const view = new DataView(out.buffer);
  let offset = 0;
  for (const table of [unicast, multicast]) {
    view.setUint32(offset, table.length, true);
    offset += 4;
    for (const mac of table) {
      out.set(mac, offset);
      offset += 6;
    }
  }
  return out;
}

export { NetCtrl };

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Waits until `condition` holds (polling every few ms), or throws after `timeoutMs`. */
export async function until(
  condition: () => boolean,
  timeoutMs = 2000,
  what = 'condition',
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what} did not hold within ${timeoutMs} ms`);
    await sleep(2);
  }
}
