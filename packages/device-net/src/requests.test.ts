import { featureBit } from '@virtkit/core';
import { describe, expect, it } from 'vitest';
import {
  NET_HDR_F_DATA_VALID,
  NET_HDR_F_NEEDS_CSUM,
  NET_HDR_GSO_ECN,
  NET_HDR_GSO_TCPV4,
  NET_HDR_GSO_TCPV6,
  NET_HDR_GSO_UDP,
  NetFeature,
} from './constants.js';
import {
  checkTransmitHeader,
  completeChecksum,
  flowHash,
  formatMac,
  netHeaderSize,
  parseControlCommand,
  parseMac,
  parseMacTables,
  plainNetHeader,
  readNetHeader,
  vlanId,
  writeNetHeader,
} from './requests.js';
import {
  ethernet,
  ipv4Frame,
  l4ChecksumValid,
  macTables,
  onesComplementSum,
  VERSION_1,
} from './test-support.js';

const f = (...bits: number[]) => bits.reduce((m, b) => m | featureBit(b), 0n);

describe('virtio_net_hdr size (§5.1.6)', () => {
  it('is 12 bytes with VERSION_1, with or without MRG_RXBUF', () => {
    expect(netHeaderSize(VERSION_1)).toBe(12);
    expect(netHeaderSize(VERSION_1 | f(NetFeature.MRG_RXBUF))).toBe(12);
  });
  it('is 12 bytes for a legacy driver with MRG_RXBUF and 10 without', () => {
    expect(netHeaderSize(f(NetFeature.MRG_RXBUF))).toBe(12);
    expect(netHeaderSize(0n)).toBe(10);
    expect(netHeaderSize(f(NetFeature.CSUM, NetFeature.GUEST_CSUM))).toBe(10);
  });
});

describe('header encoding', () => {
  it('round-trips every field little-endian', () => {
    const bytes = new Uint8Array(14);
    const h = {
      flags: 1,
      gsoType: 4,
      hdrLen: 0x1234,
      gsoSize: 1448,
      csumStart: 54,
      csumOffset: 16,
      numBuffers: 3,
    };
    writeNetHeader(h, bytes, 2);
    expect([...bytes.subarray(2, 14)]).toEqual([1, 4, 0x34, 0x12, 0xa8, 0x05, 54, 0, 16, 0, 3, 0]);
    expect(readNetHeader(bytes, 2)).toEqual(h);
  });
  it('writes and reads the 10-byte legacy layout without num_buffers', () => {
    const bytes = new Uint8Array(10).fill(0xee);
    writeNetHeader({ ...plainNetHeader(), numBuffers: 9, gsoSize: 2 }, bytes, 0, 10);
    expect([...bytes]).toEqual([0, 0, 0, 0, 2, 0, 0, 0, 0, 0]);
    expect(readNetHeader(bytes).numBuffers).toBe(0);
  });
});

describe('checkTransmitHeader (§5.1.6.2.1)', () => {
  const all = f(NetFeature.CSUM, NetFeature.HOST_TSO4, NetFeature.HOST_TSO6, NetFeature.HOST_ECN);
  const gso = (gsoType: number) => ({
    ...plainNetHeader(),
    flags: NET_HDR_F_NEEDS_CSUM,
    gsoType,
    gsoSize: 1448,
    csumStart: 34,
    csumOffset: 16,
  });

  it('accepts a plain header whatever was negotiated', () => {
    expect(checkTransmitHeader(plainNetHeader(), 0n, 60)).toBeUndefined();
  });
  it('ignores flags it does not act on (DATA_VALID) and num_buffers', () => {
    expect(
      checkTransmitHeader(
        { ...plainNetHeader(), flags: NET_HDR_F_DATA_VALID | 0x80, numBuffers: 7 },
        0n,
        60,
      ),
    ).toBeUndefined();
  });
  it('refuses NEEDS_CSUM without CSUM, and a checksum outside the frame', () => {
    const h = { ...plainNetHeader(), flags: NET_HDR_F_NEEDS_CSUM, csumStart: 34, csumOffset: 6 };
    expect(checkTransmitHeader(h, 0n, 60)).toMatch(/VIRTIO_NET_F_CSUM/);
    expect(checkTransmitHeader(h, f(NetFeature.CSUM), 60)).toBeUndefined();
    expect(checkTransmitHeader(h, f(NetFeature.CSUM), 41)).toMatch(/outside/);
    expect(checkTransmitHeader(h, f(NetFeature.CSUM), 42)).toBeUndefined();
  });
  it('ties each GSO type to its HOST_* feature', () => {
    expect(checkTransmitHeader(gso(NET_HDR_GSO_TCPV4), all, 9000)).toBeUndefined();
    expect(checkTransmitHeader(gso(NET_HDR_GSO_TCPV6), all, 9000)).toBeUndefined();
    expect(
      checkTransmitHeader(gso(NET_HDR_GSO_TCPV4), f(NetFeature.CSUM, NetFeature.HOST_TSO6), 9000),
    ).toMatch(/HOST_/);
    expect(
      checkTransmitHeader(gso(NET_HDR_GSO_TCPV6), f(NetFeature.CSUM, NetFeature.HOST_TSO4), 9000),
    ).toMatch(/HOST_/);
    expect(checkTransmitHeader(gso(NET_HDR_GSO_UDP), all, 9000)).toMatch(/HOST_/);
    expect(checkTransmitHeader(gso(0x42), all, 9000)).toMatch(/unknown gso_type/);
  });
  it('needs HOST_ECN for the ECN bit, NEEDS_CSUM and a non-zero MSS for GSO', () => {
    const ecn = gso(NET_HDR_GSO_TCPV4 | NET_HDR_GSO_ECN);
    expect(checkTransmitHeader(ecn, all, 9000)).toBeUndefined();
    expect(checkTransmitHeader(ecn, f(NetFeature.CSUM, NetFeature.HOST_TSO4), 9000)).toMatch(/ECN/);
    expect(checkTransmitHeader({ ...gso(NET_HDR_GSO_TCPV4), flags: 0 }, all, 9000)).toMatch(
      /NEEDS_CSUM/,
    );
    expect(checkTransmitHeader({ ...gso(NET_HDR_GSO_TCPV4), gsoSize: 0 }, all, 9000)).toMatch(
      /gso_size/,
    );
    expect(checkTransmitHeader({ ...plainNetHeader(), gsoType: NET_HDR_GSO_ECN }, all, 60)).toMatch(
      /unknown/,
    );
  });
});

describe('completeChecksum', () => {
  it('matches the RFC 1071 example', () => {
    // RFC 1071 §3: words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is its complement.
    const frame = Uint8Array.of(0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7, 0, 0);
    expect(completeChecksum(frame, 0, 8)).toBe(true);
    expect((frame[8]! << 8) | frame[9]!).toBe(~0xddf2 & 0xffff);
  });
  it('completes partial UDP and TCP checksums to what a full computation gives', () => {
    for (const protocol of ['udp', 'tcp'] as const) {
      for (const payloadLength of [0, 1, 63, 1400]) {
        const full = ipv4Frame({ protocol, srcPort: 5000, dstPort: 53, payloadLength });
        const partial = ipv4Frame({
          protocol,
          srcPort: 5000,
          dstPort: 53,
          payloadLength,
          partial: true,
        });
        expect(l4ChecksumValid(partial.frame)).toBe(false);
        expect(completeChecksum(partial.frame, partial.csumStart, partial.csumOffset)).toBe(true);
        expect(l4ChecksumValid(partial.frame)).toBe(true);
        expect(partial.frame).toEqual(full.frame);
      }
    }
  });
  it('refuses a position outside the frame and leaves it untouched', () => {
    const frame = new Uint8Array(20).fill(1);
    expect(completeChecksum(frame, 10, 9)).toBe(false);
    expect(completeChecksum(frame, 30, 0)).toBe(false);
    expect(frame.every((b) => b === 1)).toBe(true);
  });
  it('agrees with the obvious sum on odd lengths', () => {
    const frame = Uint8Array.of(9, 8, 7, 6, 5, 1, 0, 0, 3);
    completeChecksum(frame, 0, 6);
    expect(onesComplementSum(frame)).toBe(0xffff);
  });
});

describe('control commands (§5.1.6.5)', () => {
  it('splits class, command and data; refuses fewer than 2 bytes', () => {
    expect(parseControlCommand(Uint8Array.of(4, 0, 2, 0))).toEqual({
      cls: 4,
      command: 0,
      data: Uint8Array.of(2, 0),
    });
    expect(parseControlCommand(Uint8Array.of(4))).toBeUndefined();
  });
  it('parses MAC tables and refuses counts that do not add up', () => {
    const a = Uint8Array.of(2, 0, 0, 0, 0, 1);
    const m = Uint8Array.of(1, 0, 0x5e, 0, 0, 1);
    const tables = parseMacTables(macTables([a], [m, m]));
    expect(tables).toEqual({ unicast: [a], multicast: [m, m] });
    expect(parseMacTables(macTables([], []))).toEqual({ unicast: [], multicast: [] });
    expect(parseMacTables(new Uint8Array(4))).toMatch(/multicast entry count/);
    expect(parseMacTables(Uint8Array.of(1, 0, 0, 0, 0, 0, 0, 0))).toMatch(/announces 1 unicast/);
    expect(parseMacTables(Uint8Array.of(0xff, 0xff, 0xff, 0xff))).toMatch(/announces 4294967295/);
    const extra = new Uint8Array(9);
    expect(parseMacTables(extra)).toMatch(/1 bytes after/);
  });
});

describe('addresses and frames', () => {
  it('formats and parses MAC addresses', () => {
    expect(formatMac(Uint8Array.of(0x52, 0x54, 0, 0xa, 0xbc, 0xff))).toBe('52:54:00:0a:bc:ff');
    expect(parseMac('52:54:00:0A:bc:ff')).toEqual(Uint8Array.of(0x52, 0x54, 0, 0xa, 0xbc, 0xff));
    expect(parseMac('52-54-00-0a-bc-ff')).toEqual(Uint8Array.of(0x52, 0x54, 0, 0xa, 0xbc, 0xff));
    expect(parseMac('52:54:00:0a:bc')).toBeUndefined();
    expect(parseMac('52:54:00:0a:bc:fg')).toBeUndefined();
  });
  it('reads the VLAN ID of tagged frames only', () => {
    expect(vlanId(ethernet({ vlan: 0x2064 }))).toBe(0x064);
    expect(vlanId(ethernet())).toBeUndefined();
    expect(vlanId(new Uint8Array(10))).toBeUndefined();
  });
  it('hashes a flow the same way from both directions, and different flows apart', () => {
    const out = ipv4Frame({
      protocol: 'tcp',
      src: [10, 0, 0, 1],
      dst: [10, 0, 0, 2],
      srcPort: 40000,
      dstPort: 80,
    });
    const back = ipv4Frame({
      protocol: 'tcp',
      src: [10, 0, 0, 2],
      dst: [10, 0, 0, 1],
      srcPort: 80,
      dstPort: 40000,
    });
    const other = ipv4Frame({
      protocol: 'tcp',
      src: [10, 0, 0, 2],
      dst: [10, 0, 0, 1],
      srcPort: 80,
      dstPort: 40001,
    });
    const tx = flowHash(out.frame, false);
    expect(tx).toBeTypeOf('number');
    expect(flowHash(back.frame, true)).toBe(tx);
    expect(flowHash(other.frame, true)).not.toBe(tx);
    expect(flowHash(ethernet({ type: 0x0806 }), true)).toBeUndefined();
    expect(flowHash(out.frame.subarray(0, 30), false)).toBeUndefined();
  });
});
