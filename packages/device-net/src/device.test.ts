import { DeviceController, DeviceStatus, featureBit, SplitDriverQueue } from '@virtkit/core';
import { createTestMemory, FakeInterrupt, TestDriver } from '@virtkit/core/testing';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createMemoryPair, type MemoryBackend } from './backends/memory.js';
import {
  NET_ERR,
  NET_HDR_F_DATA_VALID,
  NET_HDR_F_NEEDS_CSUM,
  NET_HDR_GSO_TCPV4,
  NET_OK,
  NET_S_ANNOUNCE,
  NET_S_LINK_UP,
  NetConfig,
  NetCtrl,
  NetFeature,
} from './constants.js';
import { deriveMac, NetDevice } from './device.js';
import {
  accept,
  BROADCAST,
  concat,
  control,
  ethernet,
  GUEST_MAC,
  header,
  ipv4Frame,
  l4ChecksumValid,
  macTables,
  PEER_MAC,
  RING_CASES,
  sleep,
  until,
} from './test-support.js';

const bit = (b: number) => featureBit(b);
const RX0 = 0;
const TX0 = 1;

interface Bench {
  device: NetDevice;
  driver: TestDriver;
  wire: MemoryBackend;
  ctrl: number;
}

const open: NetDevice[] = [];
afterEach(async () => {
  for (const device of open.splice(0)) await device.close();
});

async function bench(
  options: {
    pairs?: number;
    vnetHeader?: boolean;
    layout?: 'split' | 'packed';
    without?: bigint;
    mtu?: number;
    queueSizes?: number[];
  } = {},
): Promise<Bench> {
  const [backend, wire] = createMemoryPair({ vnetHeader: options.vnetHeader ?? false });
  const device = new NetDevice({
    backend,
    mac: GUEST_MAC,
    queuePairs: options.pairs ?? 1,
    ...(options.mtu ? { mtu: options.mtu } : {}),
  });
  open.push(device);
  const driver = await TestDriver.create(device, {
    layout: options.layout ?? 'split',
    features: accept(device.features, options.without ?? 0n),
    ...(options.queueSizes ? { queueSizes: options.queueSizes } : {}),
  });
  const mq = (driver.controller.negotiatedFeatures & bit(NetFeature.MQ)) !== 0n;
  return { device, driver, wire, ctrl: mq ? 2 * (options.pairs ?? 1) : 2 };
}

/** Posts `count` receive buffers of `size` bytes on `queue` and kicks. */
function postReceive(driver: TestDriver, count: number, size: number, queue = RX0): number[] {
  const tokens: number[] = [];
  for (let i = 0; i < count; i++) tokens.push(driver.post(queue, { writable: [size] }).token);
  driver.kick(queue, true);
  return tokens;
}

describe.each(RING_CASES)('virtio-net over $name', ({ layout, without }) => {
  it('transmits a frame: header and frame in one or in separate descriptors', async () => {
    const { driver, wire, device } = await bench({ layout, without });
    const frame = ethernet({ dst: PEER_MAC, src: GUEST_MAC, payloadLength: 100 });
    const reply = await driver.send(TX0, { readable: [header(), frame] });
    expect(reply.len).toBe(0);
    expect(await wire.next()).toEqual(frame);
    // VERSION_1 implies any layout: header and frame in one buffer.
    await driver.send(TX0, { readable: [concat(header(), frame)] });
    expect(await wire.next()).toEqual(frame);
    // Or split mid-frame over three buffers.
    await driver.send(TX0, {
      readable: [
        header().subarray(0, 5),
        concat(header().subarray(5), frame.subarray(0, 20)),
        frame.subarray(20),
      ],
    });
    expect(await wire.next()).toEqual(frame);
    expect(device.stats).toMatchObject({ txFrames: 3, txBytes: 3 * frame.length, txErrors: 0 });
    expect(driver.controller.violations.count()).toBe(0);
  });

  it('receives a frame into one buffer with num_buffers 1', async () => {
    const { driver, wire, device } = await bench({ layout, without });
    const [token] = postReceive(driver, 1, 1526);
    const frame = ethernet({ payloadLength: 200 });
    wire.inject(frame);
    const reply = await driver.wait(RX0, token!);
    expect(reply.len).toBe(12 + frame.length);
    expect(reply.written.subarray(0, 12)).toEqual(header({ numBuffers: 1 }));
    expect(reply.written.subarray(12)).toEqual(frame);
    expect(device.stats.rxFrames).toBe(1);
  });

  it('merges a large frame over several receive buffers (MRG_RXBUF)', async () => {
    const { driver, wire } = await bench({ layout, without, mtu: 9000 });
    const tokens = postReceive(driver, 6, 1000);
    const frame = ethernet({ payloadLength: 3000 - 14 });
    wire.inject(frame);
    const replies = [];
    for (const token of tokens.slice(0, 4)) replies.push(await driver.wait(RX0, token));
    // 12 + 3000 bytes: three full buffers, then 12 bytes in the fourth.
    expect(replies.map((r) => r.len)).toEqual([1000, 1000, 1000, 12]);
    const joined = concat(...replies.map((r) => r.written));
    expect(joined.subarray(0, 12)).toEqual(header({ numBuffers: 4 }));
    expect(joined.subarray(12)).toEqual(frame);
    // The two buffers left over take the next frame.
    const small = ethernet({ payloadLength: 50 });
    wire.inject(small);
    const next = await driver.wait(RX0, tokens[4]!);
    expect(next.written).toEqual(concat(header({ numBuffers: 1 }), small));
  });

  it('holds frames while the guest has no buffers, then delivers them in order', async () => {
    const { driver, wire, device } = await bench({ layout, without });
    const frames = [1, 2, 3].map((n) => ethernet({ payloadLength: 60 + n }));
    for (const frame of frames) wire.inject(frame);
    await sleep(20);
    expect(device.stats.rxFrames).toBe(0);
    const tokens = postReceive(driver, 3, 1526);
    for (const [i, token] of tokens.entries()) {
      expect((await driver.wait(RX0, token)).written.subarray(12)).toEqual(frames[i]);
    }
    expect(device.stats.rxDroppedSize + device.stats.rxErrors).toBe(0);
  });

  it('waits for receive buffers without polling: no reads, no timers, until the guest kicks', async () => {
    const { driver, wire, device } = await bench({ layout, without });
    const receive = vi.spyOn(device.backend, 'receive');
    const frames = [1, 2, 3].map((n) => ethernet({ payloadLength: 60 + n }));
    for (const frame of frames) wire.inject(frame);
    await sleep(5);
    // One frame was pulled and is held; the backend keeps the rest (it would pause its source).
    expect(receive).toHaveBeenCalledTimes(1);
    expect(wire.peer.pending).toBe(2);
    const immediate = vi.spyOn(globalThis, 'setImmediate');
    const timeout = vi.spyOn(globalThis, 'setTimeout');
    await sleep(30);
    expect(receive).toHaveBeenCalledTimes(1);
    expect(immediate).not.toHaveBeenCalled();
    expect(timeout).toHaveBeenCalledTimes(1); // this test's own sleep
    immediate.mockRestore();
    timeout.mockRestore();
    const tokens = postReceive(driver, 3, 1526);
    for (const [i, token] of tokens.entries()) {
      expect((await driver.wait(RX0, token)).written.subarray(12)).toEqual(frames[i]);
    }
    expect(device.stats.rxFrames).toBe(3);
  });

  it('answers control commands and applies the RX mode', async () => {
    const { driver, wire, ctrl, device } = await bench({ layout, without });
    expect(await control(driver, ctrl, NetCtrl.RX, NetCtrl.RX_PROMISC, Uint8Array.of(0))).toBe(
      NET_OK,
    );
    expect(await control(driver, ctrl, NetCtrl.RX, 99, Uint8Array.of(0))).toBe(NET_ERR);
    expect(device.filter.promisc).toBe(false);
    const tokens = postReceive(driver, 2, 1526);
    wire.inject(ethernet({ dst: PEER_MAC })); // someone else's unicast: filtered
    wire.inject(ethernet({ dst: BROADCAST, payloadLength: 77 }));
    const reply = await driver.wait(RX0, tokens[0]!);
    expect(reply.written.subarray(12)).toEqual(ethernet({ dst: BROADCAST, payloadLength: 77 }));
    expect(device.stats.rxFiltered).toBe(1);
  });

  it('steers received flows to the queue pair that transmitted them (MQ)', async () => {
    const { driver, wire, ctrl, device } = await bench({ layout, without, pairs: 4 });
    expect(ctrl).toBe(8);
    expect(
      await control(driver, ctrl, NetCtrl.MQ, NetCtrl.MQ_VQ_PAIRS_SET, Uint8Array.of(3, 0)),
    ).toBe(NET_OK);
    expect(device.activePairs).toBe(3);
    const flows = [0, 1, 2].map((pair) => ({
      pair,
      out: ipv4Frame({
        protocol: 'tcp',
        srcPort: 1000 + pair,
        dstPort: 80,
        macDst: PEER_MAC,
        macSrc: GUEST_MAC,
        src: [10, 0, 0, 1],
        dst: [10, 0, 0, 2],
      }),
      back: ipv4Frame({
        protocol: 'tcp',
        srcPort: 80,
        dstPort: 1000 + pair,
        src: [10, 0, 0, 2],
        dst: [10, 0, 0, 1],
      }),
    }));
    for (const { pair, out } of flows) {
      await driver.send(2 * pair + 1, { readable: [header(), out.frame] });
      expect(await wire.next()).toEqual(out.frame);
    }
    const tokens = [0, 1, 2].map((pair) => postReceive(driver, 1, 1526, 2 * pair)[0]!);
    for (const { pair, back } of [...flows].reverse()) {
      wire.inject(back.frame);
      const reply = await driver.wait(2 * pair, tokens[pair]!);
      expect(reply.written.subarray(12)).toEqual(back.frame);
    }
  });
});

describe('configuration space (§5.1.4)', () => {
  it('holds mac, status, max_virtqueue_pairs and mtu', async () => {
    const { driver } = await bench({ pairs: 3, mtu: 9000 });
    expect(driver.readConfig(NetConfig.MAC, 6)).toEqual(GUEST_MAC);
    const view = new DataView(driver.readConfig(0, NetConfig.SIZE).buffer);
    expect(view.getUint16(NetConfig.STATUS, true)).toBe(NET_S_LINK_UP);
    expect(view.getUint16(NetConfig.MAX_VIRTQUEUE_PAIRS, true)).toBe(3);
    expect(view.getUint16(NetConfig.MTU, true)).toBe(9000);
    expect(driver.controller.violations.count()).toBe(0);
  });

  it('derives a stable locally administered unicast MAC when none is given', () => {
    const [a] = createMemoryPair();
    const device = new NetDevice({ backend: a });
    open.push(device);
    expect(device.mac).toEqual(deriveMac('memory:a'));
    expect(device.mac[0]! & 0b11).toBe(0b10);
    expect(deriveMac('unix:/run/x.sock')).toEqual(deriveMac('unix:/run/x.sock'));
    expect(deriveMac('unix:/run/x.sock')).not.toEqual(deriveMac('unix:/run/x.sock,listen'));
  });

  it('refuses impossible options', () => {
    const [a] = createMemoryPair();
    expect(() => new NetDevice({ backend: a, queuePairs: 9 })).toThrow(/queue pairs/);
    expect(() => new NetDevice({ backend: a, mtu: 67 })).toThrow(/MTU/);
    expect(() => new NetDevice({ backend: a, mac: 'zz' })).toThrow(/MAC/);
    expect(() => new NetDevice({ backend: a, mac: '01:00:5e:00:00:01' })).toThrow(/multicast/);
  });

  it('reports link changes and announcements with a config interrupt', async () => {
    const { driver, wire, device, ctrl } = await bench();
    const status = () =>
      new DataView(driver.readConfig(NetConfig.STATUS, 2).buffer).getUint16(0, true);
    const before = driver.interrupt.config;
    wire.setLink(false);
    await until(() => status() === 0, 1000, 'link down');
    expect(driver.interrupt.config).toBe(before + 1);
    wire.setLink(true);
    await until(() => status() === NET_S_LINK_UP, 1000, 'link up');
    expect(device.announce()).toBe(true);
    expect(status()).toBe(NET_S_LINK_UP | NET_S_ANNOUNCE);
    expect(await control(driver, ctrl, NetCtrl.ANNOUNCE, NetCtrl.ANNOUNCE_ACK)).toBe(NET_OK);
    expect(status()).toBe(NET_S_LINK_UP);
  });
});

describe('feature negotiation (§5.1.3.1)', () => {
  it('offers offloads only over a backend that carries virtio_net_hdr', () => {
    const plain = new NetDevice({ backend: createMemoryPair()[0] });
    const vnet = new NetDevice({ backend: createMemoryPair({ vnetHeader: true })[0] });
    for (const feature of [
      NetFeature.CSUM,
      NetFeature.GUEST_CSUM,
      NetFeature.HOST_TSO4,
      NetFeature.GUEST_TSO6,
    ]) {
      expect(plain.features & bit(feature)).toBe(0n);
      expect(vnet.features & bit(feature)).toBe(bit(feature));
    }
    expect(plain.features & bit(NetFeature.MQ)).toBe(0n);
    expect(
      new NetDevice({ backend: createMemoryPair()[0], queuePairs: 2 }).features &
        bit(NetFeature.MQ),
    ).not.toBe(0n);
  });

  it.each([
    [[NetFeature.GUEST_TSO4], /GUEST_TSO4 requires VIRTIO_NET_F_GUEST_CSUM/],
    [[NetFeature.GUEST_CSUM, NetFeature.GUEST_ECN], /GUEST_ECN requires/],
    [[NetFeature.HOST_TSO6], /HOST_TSO6 requires VIRTIO_NET_F_CSUM/],
    [[NetFeature.CTRL_RX], /CTRL_RX requires VIRTIO_NET_F_CTRL_VQ/],
    [[NetFeature.CTRL_VQ, NetFeature.CTRL_RX_EXTRA], /CTRL_RX_EXTRA requires VIRTIO_NET_F_CTRL_RX/],
    [[NetFeature.MQ], /MQ requires/],
  ])('refuses FEATURES_OK for %j', async (features, message) => {
    const device = new NetDevice({
      backend: createMemoryPair({ vnetHeader: true })[0],
      queuePairs: 2,
    });
    const wanted = features.reduce((m, b) => m | bit(b), 0n);
    await expect(TestDriver.create(device, { features: accept(wanted) })).rejects.toThrow(
      /refused/,
    );
    expect(device.validateFeatures(wanted)).toMatch(message);
  });

  it('accepts every valid offload combination', () => {
    const device = new NetDevice({ backend: createMemoryPair({ vnetHeader: true })[0] });
    expect(device.validateFeatures(device.features)).toBeUndefined();
    expect(
      device.validateFeatures(
        bit(NetFeature.GUEST_CSUM) | bit(NetFeature.GUEST_TSO6) | bit(NetFeature.GUEST_ECN),
      ),
    ).toBeUndefined();
  });

  it('works with a minimal driver: no control queue, no MRG_RXBUF (12-byte header, one buffer)', async () => {
    const [backend, wire] = createMemoryPair();
    const device = new NetDevice({ backend, mac: GUEST_MAC });
    open.push(device);
    const driver = await TestDriver.create(device, { features: accept(bit(NetFeature.MAC)) });
    expect(driver.controller.negotiatedFeatures & bit(NetFeature.CTRL_VQ)).toBe(0n);
    const [token] = postReceive(driver, 1, 1526);
    const frame = ethernet({ dst: PEER_MAC, payloadLength: 1500 }); // promiscuous: no CTRL_RX
    wire.inject(frame);
    const reply = await driver.wait(RX0, token!);
    expect(reply.written).toEqual(concat(header({ numBuffers: 1 }), frame));
    await driver.send(TX0, { readable: [header(), frame] });
    expect(await wire.next()).toEqual(frame);
    // No control queue was negotiated: queue 2 is not one, a buffer there is not answered.
    driver.post(2, { readable: [Uint8Array.of(0, 0, 0)], writable: [1] });
    driver.kick(2, true);
    await sleep(5);
    expect(driver.collect(2)).toEqual([]);
    expect(device.stats.ctrlOk + device.stats.ctrlErr).toBe(0);
  });
});

describe('receive path limits and offloads', () => {
  it('without MRG_RXBUF drops (and counts) frames larger than the buffer, keeping the buffer', async () => {
    const [backend, wire] = createMemoryPair();
    const device = new NetDevice({ backend, mac: GUEST_MAC, mtu: 9000 });
    open.push(device);
    const driver = await TestDriver.create(device, {
      features: accept(device.features, bit(NetFeature.MRG_RXBUF)),
    });
    const [token] = postReceive(driver, 1, 1526);
    wire.inject(ethernet({ payloadLength: 4000 }));
    const fits = ethernet({ payloadLength: 1500 });
    wire.inject(fits);
    const reply = await driver.wait(RX0, token!);
    expect(reply.written.subarray(12)).toEqual(fits);
    expect(device.stats.rxDroppedSize).toBe(1);
  });

  it('drops frames above the negotiated MTU', async () => {
    const { driver, wire, device } = await bench({ mtu: 1280 });
    const [token] = postReceive(driver, 1, 4096);
    wire.inject(ethernet({ payloadLength: 1281 }));
    wire.inject(ethernet({ payloadLength: 1280 }));
    expect((await driver.wait(RX0, token!)).len).toBe(12 + 14 + 1280);
    expect(device.stats.rxDroppedSize).toBe(1);
  });

  it('returns receive buffers too small for any frame unused, as a counted violation', async () => {
    const { driver, wire, device } = await bench({ without: bit(NetFeature.MRG_RXBUF) });
    const tiny = driver.post(RX0, { writable: [8] }).token;
    const good = driver.post(RX0, { writable: [1526] }).token;
    driver.kick(RX0, true);
    const frame = ethernet();
    wire.inject(frame);
    expect((await driver.wait(RX0, tiny)).len).toBe(0);
    expect((await driver.wait(RX0, good)).written.subarray(12)).toEqual(frame);
    expect(driver.controller.violations.count('NET_RX_BUFFER_TOO_SMALL')).toBe(1);
    expect(device.stats.rxFrames).toBe(1);
  });

  it('passes offload headers through to a guest that negotiated them', async () => {
    const { driver, wire } = await bench({ vnetHeader: true });
    const [token] = postReceive(driver, 1, 65562);
    const { frame, csumStart, csumOffset } = ipv4Frame({
      protocol: 'tcp',
      srcPort: 80,
      dstPort: 9,
      payloadLength: 4000,
      partial: true,
    });
    const gso = header({
      flags: NET_HDR_F_NEEDS_CSUM,
      gsoType: NET_HDR_GSO_TCPV4,
      gsoSize: 1448,
      hdrLen: 54,
      csumStart,
      csumOffset,
    });
    wire.inject(concat(gso, frame));
    const reply = await driver.wait(RX0, token!);
    expect(reply.written.subarray(0, 10)).toEqual(gso.subarray(0, 10));
    expect(reply.written.subarray(12)).toEqual(frame);
  });

  it('completes checksums and drops GSO for a guest without receive offloads', async () => {
    const { driver, wire, device } = await bench({
      vnetHeader: true,
      without: [
        NetFeature.GUEST_CSUM,
        NetFeature.GUEST_TSO4,
        NetFeature.GUEST_TSO6,
        NetFeature.GUEST_ECN,
      ].reduce((m, b) => m | bit(b), 0n),
    });
    const tokens = postReceive(driver, 2, 1526);
    const partial = ipv4Frame({
      protocol: 'udp',
      srcPort: 53,
      dstPort: 999,
      payloadLength: 300,
      partial: true,
    });
    const gso = header({
      flags: NET_HDR_F_NEEDS_CSUM,
      gsoType: NET_HDR_GSO_TCPV4,
      gsoSize: 1448,
      csumStart: 34,
      csumOffset: 16,
    });
    wire.inject(
      concat(
        gso,
        ipv4Frame({ protocol: 'tcp', srcPort: 1, dstPort: 2, payloadLength: 1000, partial: true })
          .frame,
      ),
    );
    wire.inject(
      concat(
        header({
          flags: NET_HDR_F_NEEDS_CSUM | NET_HDR_F_DATA_VALID,
          csumStart: partial.csumStart,
          csumOffset: partial.csumOffset,
        }),
        partial.frame,
      ),
    );
    const reply = await driver.wait(RX0, tokens[0]!);
    expect(reply.written.subarray(0, 12)).toEqual(header({ numBuffers: 1 })); // flags zero (§5.1.6.4.1)
    expect(l4ChecksumValid(reply.written.subarray(12))).toBe(true);
    expect(device.stats).toMatchObject({ rxDroppedOffload: 1, rxChecksumsCompleted: 1 });
  });
});

describe('transmit path', () => {
  it('forwards offload requests to a vnet-header backend and drops invalid ones', async () => {
    const { driver, wire, device } = await bench({ vnetHeader: true });
    const { frame, csumStart, csumOffset } = ipv4Frame({
      protocol: 'tcp',
      srcPort: 1,
      dstPort: 2,
      payloadLength: 8000,
      partial: true,
    });
    const gso = header({
      flags: NET_HDR_F_NEEDS_CSUM | NET_HDR_F_DATA_VALID,
      gsoType: NET_HDR_GSO_TCPV4,
      gsoSize: 1448,
      hdrLen: 54,
      csumStart,
      csumOffset,
      numBuffers: 5,
    });
    await driver.send(TX0, { readable: [gso, frame] });
    // DATA_VALID and num_buffers are not passed on.
    expect(await wire.next()).toEqual(
      concat(
        header({
          flags: NET_HDR_F_NEEDS_CSUM,
          gsoType: NET_HDR_GSO_TCPV4,
          gsoSize: 1448,
          hdrLen: 54,
          csumStart,
          csumOffset,
        }),
        frame,
      ),
    );
    await driver.send(TX0, { readable: [header({ gsoType: 0x42 }), frame] });
    expect(device.stats.txErrors).toBe(1);
    expect(driver.controller.violations.count('NET_TX_HEADER_INVALID')).toBe(1);
    expect(wire.pending).toBe(0);
  });

  it('drops and counts short headers, runts and frames above the MTU', async () => {
    const { driver, wire, device } = await bench({ mtu: 1500 });
    await driver.send(TX0, { readable: [new Uint8Array(11)] });
    await driver.send(TX0, { readable: [header(), new Uint8Array(13)] });
    await driver.send(TX0, { readable: [header(), ethernet({ payloadLength: 1505 })] });
    await driver.send(TX0, {
      readable: [header({ flags: NET_HDR_F_NEEDS_CSUM, csumStart: 20, csumOffset: 6 }), ethernet()],
    });
    const fits = ethernet({ payloadLength: 1500 });
    await driver.send(TX0, { readable: [header(), fits] });
    expect(await wire.next()).toEqual(fits);
    expect(wire.pending).toBe(0);
    expect(device.stats).toMatchObject({ txErrors: 2, txDroppedSize: 2, txFrames: 1 });
    expect(driver.controller.violations.count('REQUEST_MALFORMED')).toBe(1);
    // Nothing here is worth a reset: the device stays usable.
    expect(driver.status & 64).toBe(0);
  });

  it('stops taking transmit buffers while the backend is congested, and resumes on drain', async () => {
    const [backend, wire] = createMemoryPair({ capacity: 4 });
    const device = new NetDevice({ backend, mac: GUEST_MAC });
    open.push(device);
    const driver = await TestDriver.create(device, { features: accept(device.features) });
    const frames = Array.from({ length: 10 }, (_, i) => ethernet({ payloadLength: 50 + i }));
    const tokens = frames.map((frame) => driver.post(TX0, { readable: [header(), frame] }).token);
    driver.kick(TX0, true);
    await sleep(10);
    expect(driver.collect(TX0).length).toBe(4);
    expect(wire.pending).toBe(4);
    const seen: Uint8Array[] = [];
    while (seen.length < frames.length) seen.push(await wire.next());
    expect(seen).toEqual(frames);
    for (const token of tokens.slice(4)) await driver.wait(TX0, token);
    expect(device.stats.txFrames).toBe(10);
  });

  it('drops (and counts) frames while the link is down', async () => {
    const { driver, wire, device } = await bench();
    wire.setLink(false);
    await driver.send(TX0, { readable: [header(), ethernet()] });
    expect(device.stats.txDroppedLink).toBe(1);
  });
});

describe('control queue (§5.1.6.5)', () => {
  it('sets MAC tables, the MAC address, VLANs and RX modes; rejects malformed commands', async () => {
    const { driver, ctrl, device, wire } = await bench();
    const ok = (cls: number, cmd: number, data?: Uint8Array) =>
      control(driver, ctrl, cls, cmd, data);
    const newMac = Uint8Array.of(0x02, 0x11, 0x22, 0x33, 0x44, 0x55);
    expect(await ok(NetCtrl.MAC, NetCtrl.MAC_ADDR_SET, newMac)).toBe(NET_OK);
    expect(driver.readConfig(NetConfig.MAC, 6)).toEqual(newMac);
    expect(device.currentMac).toBe('02:11:22:33:44:55');
    expect(await ok(NetCtrl.MAC, NetCtrl.MAC_ADDR_SET, newMac.subarray(0, 5))).toBe(NET_ERR);
    expect(await ok(NetCtrl.MAC, NetCtrl.MAC_TABLE_SET, macTables([PEER_MAC], []))).toBe(NET_OK);
    expect(
      await ok(NetCtrl.MAC, NetCtrl.MAC_TABLE_SET, macTables([PEER_MAC], []).subarray(0, 9)),
    ).toBe(NET_ERR);
    expect(await ok(NetCtrl.MAC, 7, new Uint8Array(6))).toBe(NET_ERR);
    expect(await ok(NetCtrl.VLAN, NetCtrl.VLAN_ADD, Uint8Array.of(10, 0))).toBe(NET_OK);
    expect(await ok(NetCtrl.VLAN, NetCtrl.VLAN_ADD, Uint8Array.of(0, 0x10))).toBe(NET_ERR); // 4096
    expect(await ok(NetCtrl.VLAN, NetCtrl.VLAN_DEL, Uint8Array.of(10))).toBe(NET_ERR);
    for (const [cmd, key] of [
      [NetCtrl.RX_PROMISC, 'promisc'],
      [NetCtrl.RX_ALLMULTI, 'allmulti'],
      [NetCtrl.RX_ALLUNI, 'alluni'],
      [NetCtrl.RX_NOMULTI, 'nomulti'],
      [NetCtrl.RX_NOUNI, 'nouni'],
      [NetCtrl.RX_NOBCAST, 'nobcast'],
    ] as const) {
      const on = key !== 'promisc';
      expect(await ok(NetCtrl.RX, cmd, Uint8Array.of(on ? 1 : 0))).toBe(NET_OK);
      expect(device.filter[key]).toBe(on);
      expect(await ok(NetCtrl.RX, cmd, Uint8Array.of(1, 1))).toBe(NET_ERR);
    }
    expect(device.filter).toMatchObject({ unicast: 1, multicast: 0, vlans: [10] });
    expect(await ok(NetCtrl.MQ, NetCtrl.MQ_VQ_PAIRS_SET, Uint8Array.of(1, 0))).toBe(NET_ERR); // MQ not offered
    expect(await ok(NetCtrl.ANNOUNCE, NetCtrl.ANNOUNCE_ACK, Uint8Array.of(0))).toBe(NET_ERR);
    expect(await ok(NetCtrl.GUEST_OFFLOADS, NetCtrl.GUEST_OFFLOADS_SET, new Uint8Array(8))).toBe(
      NET_ERR,
    );
    expect(await ok(200, 0)).toBe(NET_ERR);
    // A one-byte command (no command field) still gets an answer.
    expect(
      (await driver.send(ctrl, { readable: [Uint8Array.of(0)], writable: [1] })).written[0],
    ).toBe(NET_ERR);
    // No room for the ack: used with length 0, counted.
    expect((await driver.send(ctrl, { readable: [Uint8Array.of(0, 0, 1)] })).len).toBe(0);
    expect(device.stats).toMatchObject({ ctrlUnanswerable: 1 });
    expect(device.stats.ctrlErr).toBe(16);
    expect(driver.controller.violations.count()).toBe(17);
    expect(driver.status & 64).toBe(0);
    // nouni is on: unicast is dropped whatever the tables say.
    const [token] = postReceive(driver, 1, 1526);
    wire.inject(ethernet({ dst: newMac }));
    await sleep(5);
    expect(driver.collect(RX0)).toEqual([]);
    expect(device.stats.rxFiltered).toBe(1);
    void token;
  });

  it('refuses queue pair counts outside 1..max_virtqueue_pairs', async () => {
    const { driver, ctrl, device } = await bench({ pairs: 2 });
    const set = (n: number) =>
      control(driver, ctrl, NetCtrl.MQ, NetCtrl.MQ_VQ_PAIRS_SET, Uint8Array.of(n & 0xff, n >> 8));
    expect(await set(0)).toBe(NET_ERR);
    expect(await set(3)).toBe(NET_ERR);
    expect(await set(0x8000)).toBe(NET_ERR);
    expect(await set(2)).toBe(NET_OK);
    expect(device.activePairs).toBe(2);
    expect(await set(1)).toBe(NET_OK);
    expect(device.activePairs).toBe(1);
  });

  it('puts the control queue at index 2 when the driver does not negotiate MQ', async () => {
    const [backend] = createMemoryPair();
    const device = new NetDevice({ backend, queuePairs: 4 });
    open.push(device);
    const driver = await TestDriver.create(device, {
      features: accept(device.features, bit(NetFeature.MQ)),
    });
    expect(await control(driver, 2, NetCtrl.RX, NetCtrl.RX_PROMISC, Uint8Array.of(0))).toBe(NET_OK);
  });
});

describe('reset', () => {
  it('drops held frames, restores the MAC and the filters, and works again after re-initialization', async () => {
    const { driver, wire, device, ctrl } = await bench();
    await control(driver, ctrl, NetCtrl.MAC, NetCtrl.MAC_ADDR_SET, Uint8Array.of(2, 0, 0, 0, 0, 1));
    await control(driver, ctrl, NetCtrl.RX, NetCtrl.RX_PROMISC, Uint8Array.of(0));
    wire.inject(ethernet());
    await sleep(5);
    await driver.reset();
    expect(driver.readConfig(NetConfig.MAC, 6)).toEqual(GUEST_MAC);
    expect(device.filter.promisc).toBe(true);
    await driver.initialize();
    const [token] = postReceive(driver, 1, 1526);
    const frame = ethernet({ payloadLength: 99 });
    wire.inject(frame);
    expect((await driver.wait(RX0, token!)).written.subarray(12)).toEqual(frame);
  });
});

describe('legacy header layout (§5.1.6.1)', () => {
  // TestDriver always negotiates VERSION_1; a transitional transport may not. Drive the
  // controller directly with a driver that leaves VERSION_1 (and MRG_RXBUF) out.
  async function legacyDriver(accepted: bigint) {
    const [backend, wire] = createMemoryPair();
    const device = new NetDevice({ backend, mac: GUEST_MAC });
    open.push(device);
    const guest = createTestMemory({ size: 4 << 20 });
    const interrupt = new FakeInterrupt();
    const controller = new DeviceController(device, {
      memory: guest.memory,
      interrupt,
      requireVersion1: false,
    });
    await controller.writeStatus(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER);
    controller.writeDriverFeatures(accepted & device.features);
    await controller.writeStatus(
      DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK,
    );
    const queues = [0, 1].map((index) => {
      const queue = new SplitDriverQueue<number>(guest.memory, {
        index,
        size: 16,
        eventIdx: false,
        indirect: false,
        allocate: (bytes, align) => guest.allocate(bytes, align),
      });
      controller.writeQueueSize(index, 16);
      controller.writeQueueAddress64(index, 'desc', queue.descAddr);
      controller.writeQueueAddress64(index, 'driver', queue.driverAddr);
      controller.writeQueueAddress64(index, 'device', queue.deviceAddr);
      controller.writeQueueReady(index, true);
      return queue;
    });
    await controller.writeStatus(LIVE);
    expect(controller.status).toBe(LIVE);
    return { controller, queues, guest, wire, device };
  }
  const LIVE =
    DeviceStatus.ACKNOWLEDGE |
    DeviceStatus.DRIVER |
    DeviceStatus.FEATURES_OK |
    DeviceStatus.DRIVER_OK;

  it.each([
    ['without MRG_RXBUF: 10 bytes', bit(NetFeature.MAC), 10],
    ['with MRG_RXBUF: 12 bytes', bit(NetFeature.MAC) | bit(NetFeature.MRG_RXBUF), 12],
  ])('%s', async (_name, accepted, size) => {
    const { controller, queues, guest, wire, device } = await legacyDriver(accepted);
    expect(controller.negotiatedFeatures & featureBit(32)).toBe(0n);
    // Receive: the header is `size` bytes, then the frame.
    const rxAddr = guest.allocate(1600, 8);
    queues[0]!.add([], [{ addr: rxAddr, len: 1600 }], 1);
    queues[0]!.publish();
    controller.notify(0);
    const frame = ethernet({ payloadLength: 100 });
    wire.inject(frame);
    await until(() => device.stats.rxFrames === 1, 1000, 'frame received');
    const used = queues[0]!.takeUsed();
    expect(used?.len).toBe(size + frame.length);
    const got = new Uint8Array(size + frame.length);
    guest.memory.read(rxAddr, got);
    expect(got.subarray(0, 10)).toEqual(new Uint8Array(10));
    if (size === 12) expect([...got.subarray(10, 12)]).toEqual([1, 0]);
    expect(got.subarray(size)).toEqual(frame);
    // Transmit: a `size`-byte header, then the frame.
    const txBytes = concat(new Uint8Array(size), frame);
    const txAddr = guest.allocate(txBytes.length, 8);
    guest.memory.write(txAddr, txBytes);
    queues[1]!.add([{ addr: txAddr, len: txBytes.length }], [], 2);
    queues[1]!.publish();
    controller.notify(1);
    expect(await wire.next()).toEqual(frame);
  });
});
