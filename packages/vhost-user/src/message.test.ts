import { describe, expect, it } from 'vitest';
import { Request } from './constants.js';
import {
  configPayload,
  decodeConfig,
  decodeInflight,
  decodeMemoryTable,
  decodeU64,
  decodeVringAddress,
  decodeVringState,
  encodeMessage,
  inflightPayload,
  type Message,
  memoryTablePayload,
  u64Payload,
  vringAddressPayload,
  vringStatePayload,
} from './message.js';

const message = (request: number, payload: Uint8Array): Message => ({
  request,
  flags: 1,
  payload,
  fds: [],
});

describe('vhost-user messages', () => {
  it('encode a header with version 1, the flags and the payload size', () => {
    const bytes = encodeMessage(Request.SET_FEATURES, 8, u64Payload(0x1_0000_0001n));
    const view = new DataView(bytes.buffer);
    expect([view.getUint32(0, true), view.getUint32(4, true), view.getUint32(8, true)]).toEqual([
      Request.SET_FEATURES,
      9,
      8,
    ]);
    expect(view.getBigUint64(12, true)).toBe(0x1_0000_0001n);
  });

  it('round-trip every payload layout', () => {
    expect(decodeU64(message(1, u64Payload(2n ** 64n - 1n)))).toBe(2n ** 64n - 1n);
    expect(decodeVringState(message(8, vringStatePayload(3, 256)))).toEqual({ index: 3, num: 256 });
    const address = { index: 1, flags: 0, desc: 0x1000n, used: 0x3000n, avail: 0x2000n, log: 0n };
    expect(decodeVringAddress(message(9, vringAddressPayload(address)))).toEqual(address);
    const regions = [
      { guestAddress: 0n, size: 0xa0000n, userAddress: 0x7f00_0000_0000n, mmapOffset: 0n },
      {
        guestAddress: 0xc0000n,
        size: 0x1000_0000n,
        userAddress: 0x7f00_000c_0000n,
        mmapOffset: 0xc0000n,
      },
    ];
    expect(decodeMemoryTable(message(5, memoryTablePayload(regions)))).toEqual(regions);
    const config = decodeConfig(message(24, configPayload(4, 0, new Uint8Array([9, 8, 7]))));
    expect(config).toMatchObject({ offset: 4, size: 3, flags: 0 });
    expect([...config.data]).toEqual([9, 8, 7]);
    const inflight = { mmapSize: 8256n, mmapOffset: 0n, numQueues: 2, queueSize: 128 };
    expect(decodeInflight(message(31, inflightPayload(inflight)))).toEqual(inflight);
    // QEMU's struct has 4 bytes of tail padding; the packed 20 bytes are accepted too.
    expect(inflightPayload(inflight).length).toBe(24);
    expect(decodeInflight(message(31, inflightPayload(inflight).subarray(0, 20)))).toEqual(
      inflight,
    );
  });

  it('refuse payloads of the wrong size with a sentence naming the request', () => {
    expect(() => decodeU64(message(Request.SET_FEATURES, new Uint8Array(4)))).toThrow(
      'SET_FEATURES carries 4 payload bytes, expected 8 (a u64)',
    );
    expect(() => decodeVringState(message(Request.SET_VRING_NUM, new Uint8Array(16)))).toThrow(
      /expected 8/,
    );
    expect(() => decodeVringAddress(message(Request.SET_VRING_ADDR, new Uint8Array(32)))).toThrow(
      /expected 40/,
    );
    expect(() => decodeInflight(message(Request.GET_INFLIGHT_FD, new Uint8Array(22)))).toThrow(
      /expected 24/,
    );
  });

  it('refuse memory tables with no regions, too many, or fewer than announced', () => {
    const table = (count: number, bytes: number) => {
      const payload = new Uint8Array(bytes);
      new DataView(payload.buffer).setUint32(0, count, true);
      return message(Request.SET_MEM_TABLE, payload);
    };
    expect(() => decodeMemoryTable(table(0, 8))).toThrow(/announces 0 regions/);
    expect(() => decodeMemoryTable(table(9, 8 + 9 * 32))).toThrow(/announces 9 regions/);
    expect(() => decodeMemoryTable(table(2, 8 + 32))).toThrow(/carries only 40 payload bytes/);
    expect(() => decodeMemoryTable(message(5, new Uint8Array(4)))).toThrow(/too short/);
    expect(decodeMemoryTable(table(1, 8 + 8 * 32))).toHaveLength(1);
  });

  it('refuse config accesses beyond 256 bytes or with a size that disagrees with the payload', () => {
    const access = (size: number, carried: number) => {
      const payload = new Uint8Array(12 + carried);
      new DataView(payload.buffer).setUint32(4, size, true);
      return message(Request.GET_CONFIG, payload);
    };
    expect(() => decodeConfig(access(300, 300))).toThrow(/at most 256/);
    expect(() => decodeConfig(access(8, 4))).toThrow(/of 8 config bytes carries 4/);
    expect(() => decodeConfig(message(24, new Uint8Array(6)))).toThrow(/too short/);
  });
});
