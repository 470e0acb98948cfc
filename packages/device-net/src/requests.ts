/**
 * What the guest hands the device, parsed and checked: the `virtio_net_hdr` in front of every
 * frame (§5.1.6), control commands (§5.1.6.5), and the parts of a frame the device looks at
 * (destination address for filtering, the IP flow for receive steering, the checksum it may have
 * to complete). Pure functions over bytes: no queues, no I/O.
 */

import { featureBit } from '@virtkit/core';
import {
  ETH_ALEN,
  ETH_HLEN,
  ETH_P_8021Q,
  ETH_P_IPV4,
  ETH_P_IPV6,
  NET_HDR_F_NEEDS_CSUM,
  NET_HDR_GSO_ECN,
  NET_HDR_GSO_NONE,
  NET_HDR_GSO_TCPV4,
  NET_HDR_GSO_TCPV6,
  NET_HDR_GSO_UDP,
  NET_HDR_GSO_UDP_L4,
  NET_HDR_SIZE,
  NET_HDR_SIZE_LEGACY,
  NetFeature,
  NetHeaderField,
  VLAN_HLEN,
} from './constants.js';

const VERSION_1 = 1n << 32n;

/** `struct virtio_net_hdr` (§5.1.6), decoded. */
export interface NetHeader {
  flags: number;
  gsoType: number;
  hdrLen: number;
  gsoSize: number;
  csumStart: number;
  csumOffset: number;
  numBuffers: number;
}

/** A header for a plain, fully checksummed frame (no offload). */
export function plainNetHeader(): NetHeader {
  return {
    flags: 0,
    gsoType: NET_HDR_GSO_NONE,
    hdrLen: 0,
    gsoSize: 0,
    csumStart: 0,
    csumOffset: 0,
    numBuffers: 0,
  };
}

/**
 * Size of the header in front of each frame for a negotiated feature set: 12 bytes when
 * VERSION_1 or MRG_RXBUF was negotiated (§5.1.6: modern devices always carry `num_buffers`),
 * 10 for a legacy driver without MRG_RXBUF (§5.1.6.1).
 */
export function netHeaderSize(features: bigint): number {
  return features & VERSION_1 || features & featureBit(NetFeature.MRG_RXBUF)
    ? NET_HDR_SIZE
    : NET_HDR_SIZE_LEGACY;
}

/** Decodes a header from `bytes` at `offset`; `num_buffers` reads 0 if only 10 bytes are there. */
export function readNetHeader(bytes: Uint8Array, offset = 0): NetHeader {
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, bytes.length - offset);
  return {
    flags: view.getUint8(NetHeaderField.FLAGS),
    gsoType: view.getUint8(NetHeaderField.GSO_TYPE),
    hdrLen: view.getUint16(NetHeaderField.HDR_LEN, true),
    gsoSize: view.getUint16(NetHeaderField.GSO_SIZE, true),
    csumStart: view.getUint16(NetHeaderField.CSUM_START, true),
    csumOffset: view.getUint16(NetHeaderField.CSUM_OFFSET, true),
    numBuffers:
      view.byteLength >= NET_HDR_SIZE ? view.getUint16(NetHeaderField.NUM_BUFFERS, true) : 0,
  };
}

/** Encodes `header` into `target` at `offset`, `size` (10 or 12) bytes. */
export function writeNetHeader(
  header: NetHeader,
  target: Uint8Array,
  offset = 0,
  size = NET_HDR_SIZE,
): void {
  const view = new DataView(target.buffer, target.byteOffset + offset, size);
  view.setUint8(NetHeaderField.FLAGS, header.flags);
  view.setUint8(NetHeaderField.GSO_TYPE, header.gsoType);
  view.setUint16(NetHeaderField.HDR_LEN, header.hdrLen, true);
  view.setUint16(NetHeaderField.GSO_SIZE, header.gsoSize, true);
  view.setUint16(NetHeaderField.CSUM_START, header.csumStart, true);
  view.setUint16(NetHeaderField.CSUM_OFFSET, header.csumOffset, true);
  if (size >= NET_HDR_SIZE) view.setUint16(NetHeaderField.NUM_BUFFERS, header.numBuffers, true);
}

function has(features: bigint, bit: number): boolean {
  return (features & featureBit(bit)) !== 0n;
}

/**
 * Checks a transmitted frame's header against what the driver negotiated (§5.1.6.2.1): checksum
 * offload only with CSUM, each GSO type only with its HOST_* feature, ECN only with HOST_ECN, GSO
 * only together with NEEDS_CSUM and a non-zero MSS, and a checksum position inside the frame.
 * Returns a sentence naming the first problem, or `undefined` if the device can forward it.
 */
export function checkTransmitHeader(
  header: NetHeader,
  features: bigint,
  frameLength: number,
): string | undefined {
  const needsCsum = (header.flags & NET_HDR_F_NEEDS_CSUM) !== 0;
  if (needsCsum) {
    if (!has(features, NetFeature.CSUM)) {
      return 'driver set VIRTIO_NET_HDR_F_NEEDS_CSUM without negotiating VIRTIO_NET_F_CSUM';
    }
    if (header.csumStart + header.csumOffset + 2 > frameLength) {
      return `checksum at ${header.csumStart}+${header.csumOffset} lies outside the ${frameLength}-byte frame`;
    }
  }
  if (header.gsoType === NET_HDR_GSO_NONE) return undefined;
  const base = header.gsoType & ~NET_HDR_GSO_ECN;
  const needed =
    base === NET_HDR_GSO_TCPV4
      ? NetFeature.HOST_TSO4
      : base === NET_HDR_GSO_TCPV6
        ? NetFeature.HOST_TSO6
        : base === NET_HDR_GSO_UDP
          ? NetFeature.HOST_UFO
          : base === NET_HDR_GSO_UDP_L4
            ? NetFeature.HOST_USO
            : undefined;
  if (needed === undefined) return `unknown gso_type 0x${header.gsoType.toString(16)}`;
  if (!has(features, needed)) {
    return `driver set gso_type 0x${header.gsoType.toString(16)} without negotiating the matching HOST_* feature`;
  }
  if (header.gsoType & NET_HDR_GSO_ECN && !has(features, NetFeature.HOST_ECN)) {
    return 'driver set VIRTIO_NET_HDR_GSO_ECN without negotiating VIRTIO_NET_F_HOST_ECN';
  }
  if (!needsCsum) return 'GSO frame without VIRTIO_NET_HDR_F_NEEDS_CSUM';
  if (header.gsoSize === 0) return 'GSO frame with gso_size 0';
  return undefined;
}

/**
 * Completes a partial checksum in place (what a NIC does for VIRTIO_NET_HDR_F_NEEDS_CSUM): the
 * ones' complement of the ones' complement sum from `csumStart` to the end of the frame, stored
 * big-endian at `csumStart + csumOffset`. The field already holds the pseudo-header sum (§5.1.6.2).
 * A result of 0 is sent as 0xffff, as Linux does, since 0 means "no checksum" to UDP.
 * Returns false if the position lies outside the frame.
 */
export function completeChecksum(
  frame: Uint8Array,
  csumStart: number,
  csumOffset: number,
): boolean {
  const at = csumStart + csumOffset;
  if (at + 2 > frame.length || csumStart > frame.length) return false;
  let sum = 0;
  let i = csumStart;
  for (; i + 1 < frame.length; i += 2) {
    sum += (frame[i]! << 8) | frame[i + 1]!;
    // Fold now and then so the running sum stays a small integer.
    if (sum > 0x7fff_ffff) sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (i < frame.length) sum += frame[i]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const result = ~sum & 0xffff || 0xffff;
  frame[at] = result >> 8;
  frame[at + 1] = result & 0xff;
  return true;
}

/** A control command (§5.1.6.5): class, command and the command-specific data. */
export interface ControlCommand {
  readonly cls: number;
  readonly command: number;
  readonly data: Uint8Array;
}

/** Splits the device-readable bytes of a control request; `undefined` if shorter than 2 bytes. */
export function parseControlCommand(bytes: Uint8Array): ControlCommand | undefined {
  if (bytes.length < 2) return undefined;
  return { cls: bytes[0]!, command: bytes[1]!, data: bytes.subarray(2) };
}

/** The two tables of VIRTIO_NET_CTRL_MAC_TABLE_SET (§5.1.6.5.2). */
export interface MacTables {
  readonly unicast: readonly Uint8Array[];
  readonly multicast: readonly Uint8Array[];
}

/**
 * Parses the data of VIRTIO_NET_CTRL_MAC_TABLE_SET: a le32 count and that many 6-byte addresses,
 * twice (unicast, then multicast). Returns a sentence if the lengths do not add up exactly.
 */
export function parseMacTables(data: Uint8Array): MacTables | string {
  const view = new DataView(data.buffer, data.byteOffset, data.length);
  let offset = 0;
  const tables: Uint8Array[][] = [];
  for (const which of ['unicast', 'multicast']) {
    if (offset + 4 > data.length) return `MAC table set ends before the ${which} entry count`;
    const entries = view.getUint32(offset, true);
    offset += 4;
    if (entries > (data.length - offset) / ETH_ALEN) {
      return `MAC table set announces ${entries} ${which} entries but carries ${Math.floor((data.length - offset) / ETH_ALEN)}`;
    }
    const table: Uint8Array[] = [];
    for (let i = 0; i < entries; i++, offset += ETH_ALEN) {
      table.push(data.slice(offset, offset + ETH_ALEN));
    }
    tables.push(table);
  }
  if (offset !== data.length) {
    return `MAC table set has ${data.length - offset} bytes after the multicast table`;
  }
  return { unicast: tables[0]!, multicast: tables[1]! };
}

/** Formats a MAC address as `aa:bb:cc:dd:ee:ff`. */
export function formatMac(mac: Uint8Array): string {
  return Array.from(mac.subarray(0, ETH_ALEN), (b) => b.toString(16).padStart(2, '0')).join(':');
}

/** Parses `aa:bb:cc:dd:ee:ff` (or with dashes); `undefined` if it is not six hex octets. */
export function parseMac(text: string): Uint8Array | undefined {
  const parts = text.split(/[:-]/);
  if (parts.length !== ETH_ALEN || !parts.every((p) => /^[0-9a-fA-F]{2}$/.test(p)))
    return undefined;
  return Uint8Array.from(parts, (p) => Number.parseInt(p, 16));
}

/** The 802.1Q VLAN ID of a tagged frame, or `undefined` for an untagged one. */
export function vlanId(frame: Uint8Array): number | undefined {
  if (frame.length < ETH_HLEN + VLAN_HLEN) return undefined;
  if (((frame[12]! << 8) | frame[13]!) !== ETH_P_8021Q) return undefined;
  return ((frame[14]! << 8) | frame[15]!) & 0x0fff;
}

/**
 * A 32-bit hash of a frame's flow for automatic receive steering (§5.1.6.5.5): protocol, the
 * two IP addresses and (for TCP and UDP, unfragmented) the two ports. `reverse` swaps source and
 * destination, so a received frame hashes like the transmitted frames of the same flow.
 * Returns `undefined` for frames that are not IPv4 or IPv6.
 */
export function flowHash(frame: Uint8Array, reverse: boolean): number | undefined {
  let l3 = ETH_HLEN;
  if (frame.length < l3) return undefined;
  let ethertype = (frame[12]! << 8) | frame[13]!;
  if (ethertype === ETH_P_8021Q) {
    if (frame.length < ETH_HLEN + VLAN_HLEN) return undefined;
    ethertype = (frame[16]! << 8) | frame[17]!;
    l3 += VLAN_HLEN;
  }
  let protocol: number;
  let addressOffset: number;
  let addressLength: number;
  let l4: number | undefined;
  if (ethertype === ETH_P_IPV4) {
    if (frame.length < l3 + 20) return undefined;
    const ihl = (frame[l3]! & 0x0f) * 4;
    protocol = frame[l3 + 9]!;
    addressOffset = l3 + 12;
    addressLength = 4;
    const fragment = ((frame[l3 + 6]! << 8) | frame[l3 + 7]!) & 0x3fff;
    if (fragment === 0 && ihl >= 20) l4 = l3 + ihl;
  } else if (ethertype === ETH_P_IPV6) {
    if (frame.length < l3 + 40) return undefined;
    protocol = frame[l3 + 6]!;
    addressOffset = l3 + 8;
    addressLength = 16;
    l4 = l3 + 40;
  } else {
    return undefined;
  }
  const ports = (protocol === 6 || protocol === 17) && l4 !== undefined && frame.length >= l4 + 4;
  let hash = 0x811c9dc5;
  const mix = (byte: number) => {
    hash = Math.imul(hash ^ byte, 0x01000193);
  };
  mix(protocol);
  const source = addressOffset;
  const destination = addressOffset + addressLength;
  const first = reverse ? destination : source;
  const second = reverse ? source : destination;
  const firstPort = reverse ? 2 : 0;
  const secondPort = reverse ? 0 : 2;
  for (let i = 0; i < addressLength; i++) mix(frame[first + i]!);
  if (ports) {
    mix(frame[l4! + firstPort]!);
    mix(frame[l4! + firstPort + 1]!);
  }
  for (let i = 0; i < addressLength; i++) mix(frame[second + i]!);
  if (ports) {
    mix(frame[l4! + secondPort]!);
    mix(frame[l4! + secondPort + 1]!);
  }
  return hash >>> 0;
}
