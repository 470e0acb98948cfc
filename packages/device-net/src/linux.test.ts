/**
 * The device as Linux's virtio_net drives it: drivers/net/virtio_net.c and
 * include/uapi/linux/virtio_net.h of Debian's 6.1.192 and 6.12.117, the guest kernels Virtkit
 * boots. Values are written out literally here (not taken from constants.ts), so a transcription
 * mistake fails; commands are built the way virtnet_send_command builds them: the class and
 * command in one 2-byte descriptor, each piece of data in its own, and a 1-byte status the device
 * must set to VIRTIO_NET_OK (0) or VIRTIO_NET_ERR (1).
 */

import { featureBit } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { createMemoryPair } from './backends/memory.js';
import {
  NET_ERR,
  NET_HDR_SIZE,
  NET_OK,
  NET_S_ANNOUNCE,
  NET_S_LINK_UP,
  NetConfig,
  NetCtrl,
  NetFeature,
  NetHeaderField,
} from './constants.js';
import { NetDevice } from './device.js';
import { ethernet, GUEST_MAC, PEER_MAC, sleep } from './test-support.js';

/** VIRTNET_FEATURES of Linux 6.12 (6.1's is a subset), plus the transport bits it keeps. */
const LINUX_FEATURES = [
  0, 1, 5, 11, 14, 12, 13, 7, 8, 9, 10, 56, 54, 55, 15, 16, 17, 18, 19, 21, 22, 23, 3, 2, 63, 62,
  60, 57, 53, 52, 59, 50,
  // VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_VERSION_1, VIRTIO_F_RING_PACKED
  28, 29, 32, 34,
].reduce((mask, bit) => mask | featureBit(bit), 0n);

const open: NetDevice[] = [];
afterEach(async () => {
  for (const device of open.splice(0)) await device.close();
});

describe('Linux virtio_net ABI (include/uapi/linux/virtio_net.h)', () => {
  it('has the feature bits, status bits, config offsets and header layout Linux uses', () => {
    expect(NetFeature).toMatchObject({
      CSUM: 0,
      GUEST_CSUM: 1,
      CTRL_GUEST_OFFLOADS: 2,
      MTU: 3,
      MAC: 5,
      GUEST_TSO4: 7,
      GUEST_TSO6: 8,
      GUEST_ECN: 9,
      GUEST_UFO: 10,
      HOST_TSO4: 11,
      HOST_TSO6: 12,
      HOST_ECN: 13,
      HOST_UFO: 14,
      MRG_RXBUF: 15,
      STATUS: 16,
      CTRL_VQ: 17,
      CTRL_RX: 18,
      CTRL_VLAN: 19,
      CTRL_RX_EXTRA: 20,
      GUEST_ANNOUNCE: 21,
      MQ: 22,
      CTRL_MAC_ADDR: 23,
    });
    expect([NET_S_LINK_UP, NET_S_ANNOUNCE]).toEqual([1, 2]);
    expect(NetConfig).toMatchObject({ MAC: 0, STATUS: 6, MAX_VIRTQUEUE_PAIRS: 8, MTU: 10 });
    // struct virtio_net_hdr_mrg_rxbuf: the header of every VERSION_1 frame.
    expect(NET_HDR_SIZE).toBe(12);
    expect(NetHeaderField).toEqual({
      FLAGS: 0,
      GSO_TYPE: 1,
      HDR_LEN: 2,
      GSO_SIZE: 4,
      CSUM_START: 6,
      CSUM_OFFSET: 8,
      NUM_BUFFERS: 10,
    });
  });

  it('has the control classes, commands and acks Linux sends and checks', () => {
    expect([NET_OK, NET_ERR]).toEqual([0, 1]);
    expect(NetCtrl).toMatchObject({
      RX: 0,
      RX_PROMISC: 0,
      RX_ALLMULTI: 1,
      MAC: 1,
      MAC_TABLE_SET: 0,
      MAC_ADDR_SET: 1,
      VLAN: 2,
      VLAN_ADD: 0,
      VLAN_DEL: 1,
      ANNOUNCE: 3,
      ANNOUNCE_ACK: 0,
      MQ: 4,
      MQ_VQ_PAIRS_SET: 0,
      GUEST_OFFLOADS: 5,
    });
  });
});

describe('a guest running Linux virtio_net', () => {
  async function linuxGuest() {
    const [backend, wire] = createMemoryPair({ vnetHeader: true });
    const device = new NetDevice({ backend, mac: GUEST_MAC, queuePairs: 4 });
    open.push(device);
    const driver = await TestDriver.create(device, { features: LINUX_FEATURES });
    /** virtnet_send_command: header, data pieces, 1-byte status; returns the status byte. */
    const command = async (cls: number, cmd: number, ...data: Uint8Array[]) => {
      const reply = await driver.send(8, {
        readable: [Uint8Array.of(cls, cmd), ...data],
        writable: [1],
      });
      expect(reply.len).toBe(1);
      return reply.written[0];
    };
    return { device, driver, wire, command };
  }

  it('negotiates every offered feature Linux knows and reads the config fields it uses', async () => {
    const { device, driver } = await linuxGuest();
    const negotiated = driver.controller.negotiatedFeatures;
    // Linux's table has no CTRL_RX_EXTRA: everything else the device offers is taken (VERSION_1
    // comes from core; this guest uses split rings, so not RING_PACKED).
    const offered = (device.features | featureBit(32)) & ~featureBit(34);
    expect(negotiated).toBe(offered & ~featureBit(20) & LINUX_FEATURES);
    expect(negotiated & featureBit(20)).toBe(0n);
    expect(negotiated & featureBit(22)).not.toBe(0n); // MQ: the control queue is index 2 * 4
    const config = new DataView(driver.readConfig(0, 12).buffer);
    expect(driver.readConfig(0, 6)).toEqual(GUEST_MAC);
    expect(config.getUint16(6, true)).toBe(1); // status: VIRTIO_NET_S_LINK_UP
    expect(config.getUint16(8, true)).toBe(4); // max_virtqueue_pairs
    expect(config.getUint16(10, true)).toBe(1500); // mtu
  });

  it('answers the probe and open commands byte for byte, and filters as they ask', async () => {
    const { device, driver, wire, command } = await linuxGuest();
    // virtnet_probe: virtnet_set_queues(vi, min(num_online_cpus(), max_queue_pairs)), here 2.
    expect(await command(4, 0, Uint8Array.of(2, 0))).toBe(0);
    expect(device.activePairs).toBe(2);
    // ndo_open → virtnet_set_rx_mode: PROMISC 0, ALLMULTI 0, then the MAC tables in two pieces.
    expect(await command(0, 0, Uint8Array.of(0))).toBe(0);
    expect(await command(0, 1, Uint8Array.of(0))).toBe(0);
    const allHosts = Uint8Array.of(0x01, 0x00, 0x5e, 0x00, 0x00, 0x01);
    const allNodes = Uint8Array.of(0x33, 0x33, 0x00, 0x00, 0x00, 0x01);
    const unicast = Uint8Array.of(0, 0, 0, 0); // le32 entries = 0
    const multicast = Uint8Array.of(2, 0, 0, 0, ...allHosts, ...allNodes);
    expect(await command(1, 0, unicast, multicast)).toBe(0);
    // 8021q registers VLAN 0 on NETDEV_UP: virtnet_vlan_rx_add_vid sends a __virtio16 vid.
    expect(await command(2, 0, Uint8Array.of(0, 0))).toBe(0);
    expect(device.filter).toMatchObject({ promisc: false, allmulti: false, multicast: 2 });
    expect(device.filter.vlans).toEqual([0]);
    // A command whose feature was not negotiated (CTRL_GUEST_OFFLOADS is not offered): ERR.
    expect(await command(5, 0, new Uint8Array(8))).toBe(1);

    // The filter passes what the guest asked for and nothing else.
    const tokens = [0, 1].map(() => driver.post(0, { writable: [12 + 1518] }).token);
    driver.kick(0, true);
    wire.inject(new Uint8Array([...new Uint8Array(12), ...ethernet({ dst: PEER_MAC })]));
    wire.inject(new Uint8Array([...new Uint8Array(12), ...ethernet({ dst: allNodes })]));
    wire.inject(new Uint8Array([...new Uint8Array(12), ...ethernet({ dst: GUEST_MAC })]));
    const first = await driver.wait(0, tokens[0]!);
    const second = await driver.wait(0, tokens[1]!);
    expect(first.written.subarray(12, 18)).toEqual(allNodes);
    expect(second.written.subarray(12, 18)).toEqual(GUEST_MAC);
    // num_buffers is 1 in a VERSION_1 header even with MRG_RXBUF and a frame in one buffer.
    expect(new DataView(first.written.buffer, first.written.byteOffset).getUint16(10, true)).toBe(
      1,
    );
    await sleep(5);
    expect(device.stats.rxFiltered).toBe(1);
  });

  it('takes VIRTIO_NET_S_ANNOUNCE back when Linux acknowledges it', async () => {
    const { device, driver, command } = await linuxGuest();
    const before = driver.interrupt.config;
    expect(device.announce()).toBe(true);
    expect(driver.interrupt.config).toBe(before + 1);
    expect(new DataView(driver.readConfig(6, 2).buffer).getUint16(0, true)).toBe(3);
    // virtnet_config_changed_work → netdev_notify_peers, virtnet_ack_link_announce (no data).
    expect(await command(3, 0)).toBe(0);
    expect(new DataView(driver.readConfig(6, 2).buffer).getUint16(0, true)).toBe(1);
  });
});
