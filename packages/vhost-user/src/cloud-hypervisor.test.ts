/**
 * Cloud Hypervisor's vhost-user front-end, replayed against this back-end.
 *
 * Cloud Hypervisor cannot run here (it needs a KVM that boots stock kernels), so its message
 * sequences were read from its source and are sent here in the same order, with the same flags
 * and payloads. Source read: cloud-hypervisor/cloud-hypervisor main at ae44c2971 (2026-08-22,
 * `git describe`: v53.0-246-gae44c2971), which uses the rust-vmm `vhost` crate 0.17.0 (its
 * Cargo.lock); the crate's front-end was read at rust-vmm/vhost 4e217d9 (0.16.0 + unreleased).
 * Paths below are relative to those repositories:
 *
 * - CH virtio-devices/src/vhost_user/vu_common_ctrl.rs: `connect_vhost_user` (SET_OWNER,
 *   GET_FEATURES), `negotiate_features_vhost_user` (GET/SET_PROTOCOL_FEATURES, then NEED_REPLY on
 *   every later message when REPLY_ACK was acked), `setup_vhost_user` (the start sequence),
 *   `reset_vhost_user` (SET_VRING_ENABLE 0 + GET_VRING_BASE per ring), `pause_vhost_user` /
 *   `resume_vhost_user` (SET_VRING_ENABLE 0 / 1 only), `reinitialize_vhost_user` (reconnect).
 * - CH virtio-devices/src/vhost_user/blk.rs, net.rs: offered features and protocol features,
 *   GET_QUEUE_NUM, GET_CONFIG (flags WRITABLE = 1, CH's own struct size: 60 bytes for blk, 17 for
 *   net), SET_CONFIG for the blk `writeback` field (flags WRITABLE = 1).
 * - CH virtio-devices/src/vhost_user/generic_vhost_user.rs (`--generic-vhost-user`, since v52.0):
 *   DEFAULT_VIRTIO_FEATURES only, BACKEND_REQ added, SET_BACKEND_REQ_FD after the rings are
 *   enabled, each guest config access forwarded as GET_CONFIG (flags 0) / SET_CONFIG.
 * - CH virtio-devices/src/vhost_user/mod.rs: DEFAULT_VIRTIO_FEATURES, `VhostUserCommon::activate`
 *   (a fresh inflight area per activation), reconnect on HUP.
 * - vhost vhost/src/vhost_user/frontend.rs: header flags, which requests wait for an ack
 *   (`wait_for_ack`) and which read a reply (`recv_reply`), reply checks of GET_CONFIG.
 */

import {
  type ActivationContext,
  ConfigSpace,
  type DeviceQueue,
  DeviceType,
  Feature,
  featureBit,
  SplitDriverQueue,
  type VirtioDevice,
} from '@virtkit/core';
import { BlockDevice, MemoryBackend } from '@virtkit/device-blk';
import { recvmsg, socketpair, waitReadable } from '@virtkit/linux';
import { describe, expect, it } from 'vitest';
import { VhostUserBackend } from './backend.js';
import { closeQuietly } from './channel.js';
import {
  BackendRequest,
  HEADER_SIZE,
  ProtocolFeature,
  Request,
  VHOST_USER_F_PROTOCOL_FEATURES,
} from './constants.js';
import {
  configPayload,
  decodeConfig,
  decodeInflight,
  decodeU64,
  decodeVringState,
  type InflightDescription,
  inflightPayload,
  memoryTablePayload,
  u64Payload,
  vringAddressPayload,
  vringStatePayload,
} from './message.js';
import { EchoDevice } from './test-device.js';
import { onCleanup, str, text, ticks, until } from './test-support.js';
import { FrontendGuest, FrontendQueue, TestFrontend } from './testing/frontend.js';

const bit = (n: number) => 1n << BigInt(n);
const pbit = (n: number) => 1n << BigInt(n);

/** CH virtio-devices/src/vhost_user/mod.rs, DEFAULT_VIRTIO_FEATURES. */
const CH_DEFAULT_VIRTIO_FEATURES =
  featureBit(Feature.RING_INDIRECT_DESC) |
  featureBit(Feature.RING_EVENT_IDX) |
  featureBit(Feature.VERSION_1) |
  bit(35) | // VIRTIO_F_IN_ORDER
  bit(36) | // VIRTIO_F_ORDER_PLATFORM
  bit(38) | // VIRTIO_F_NOTIFICATION_DATA
  bit(VHOST_USER_F_PROTOCOL_FEATURES) |
  bit(26); // VHOST_F_LOG_ALL

/** CH blk.rs `Blk::new`: SIZE_MAX, SEG_MAX, GEOMETRY, RO, BLK_SIZE, FLUSH, TOPOLOGY, CONFIG_WCE,
 * DISCARD, WRITE_ZEROES, and MQ when num_queues > 1. */
const chBlkFeatures = (numQueues: number) =>
  [1, 2, 4, 5, 6, 9, 10, 11, 13, 14].reduce((mask, n) => mask | bit(n), 0n) |
  (numQueues > 1 ? bit(12) : 0n) |
  CH_DEFAULT_VIRTIO_FEATURES;

/** CH net.rs `Net::new` with the default offload_csum/tso/ufo=on: MRG_RXBUF, CTRL_VQ,
 * GUEST_ANNOUNCE, MAC, MTU, MQ, CSUM, GUEST_CSUM, the TSO/ECN/UFO bits. */
const CH_NET_FEATURES =
  [15, 17, 21, 5, 3, 22, 0, 1, 13, 11, 12, 9, 7, 8, 14, 10].reduce((mask, n) => mask | bit(n), 0n) |
  CH_DEFAULT_VIRTIO_FEATURES;

/** Protocol features blk.rs and net.rs offer: CONFIG, MQ, CONFIGURE_MEM_SLOTS, REPLY_ACK,
 * INFLIGHT_SHMFD, LOG_SHMFD, DEVICE_STATE (bit 19). No BACKEND_REQ, STATUS or RESET_DEVICE. */
const CH_PROTOCOL_FEATURES =
  pbit(ProtocolFeature.CONFIG) |
  pbit(ProtocolFeature.MQ) |
  pbit(ProtocolFeature.CONFIGURE_MEM_SLOTS) |
  pbit(ProtocolFeature.REPLY_ACK) |
  pbit(ProtocolFeature.INFLIGHT_SHMFD) |
  pbit(ProtocolFeature.LOG_SHMFD) |
  pbit(19);

/** vhost message.rs VhostUserConfigFlags::WRITABLE: what CH puts in GET_CONFIG and SET_CONFIG. */
const CH_CONFIG_FLAGS_WRITABLE = 1;

const NET = { CSUM: 0, MTU: 3, MAC: 5, MRG_RXBUF: 15, STATUS: 16, CTRL_VQ: 17 } as const;
const NET_GUEST_ANNOUNCE = 21;
const NET_MQ = 22;

/**
 * Cloud Hypervisor's `VhostUserHandle` over a {@link TestFrontend} connection: one request at a
 * time, waiting for each reply as the vhost crate's `Frontend` does.
 */
class CloudHypervisor {
  readonly frontend: TestFrontend;
  backendFeatures = 0n;
  ackedFeatures = 0n;
  ackedProtocol = 0n;
  /** `set_hdr_flags(NEED_REPLY)`: on every message after protocol negotiation with REPLY_ACK. */
  needReply = false;

  constructor(frontend: TestFrontend) {
    this.frontend = frontend;
  }

  /** `connect_vhost_user`: SET_OWNER, GET_FEATURES (no header flags yet). */
  async connect(): Promise<void> {
    this.frontend.send(Request.SET_OWNER);
    this.backendFeatures = decodeU64(await this.frontend.request(Request.GET_FEATURES));
  }

  /** `negotiate_features_vhost_user`. */
  async negotiate(avail: bigint, availProtocol: bigint): Promise<void> {
    this.ackedFeatures = avail & this.backendFeatures;
    if (this.ackedFeatures & bit(VHOST_USER_F_PROTOCOL_FEATURES)) {
      const offered = decodeU64(await this.frontend.request(Request.GET_PROTOCOL_FEATURES));
      this.ackedProtocol = availProtocol & offered;
      // Sent before `set_hdr_flags`: no NEED_REPLY, so `wait_for_ack` returns at once.
      this.frontend.send(Request.SET_PROTOCOL_FEATURES, u64Payload(this.ackedProtocol));
    }
    this.needReply = (this.ackedProtocol & pbit(ProtocolFeature.REPLY_ACK)) !== 0n;
  }

  /** `reinitialize_vhost_user` after a reconnect: SET_PROTOCOL_FEATURES without asking first. */
  setProtocolFeaturesAgain(): void {
    this.frontend.send(Request.SET_PROTOCOL_FEATURES, u64Payload(this.ackedProtocol));
    this.needReply = (this.ackedProtocol & pbit(ProtocolFeature.REPLY_ACK)) !== 0n;
  }

  /** A request answered by REPLY_ACK (when negotiated): CH fails the step on a non-zero status. */
  async set(request: number, payload?: Uint8Array, fds: readonly number[] = []): Promise<bigint> {
    if (!this.needReply) {
      this.frontend.send(request, payload, fds);
      return 0n;
    }
    return this.frontend.ack(request, payload, fds);
  }

  /** A request with its own reply; NEED_REPLY rides along and must not add a second reply. */
  get(request: number, payload?: Uint8Array) {
    return this.frontend.request(request, payload, [], { needReply: this.needReply });
  }

  async getQueueNum(): Promise<number> {
    return Number(decodeU64(await this.get(Request.GET_QUEUE_NUM)));
  }

  /** GET_CONFIG as blk.rs/net.rs ask it; the vhost crate refuses a reply of another size. */
  async getConfig(size: number): Promise<Uint8Array> {
    const reply = await this.get(
      Request.GET_CONFIG,
      configPayload(0, CH_CONFIG_FLAGS_WRITABLE, new Uint8Array(size)),
    );
    const access = decodeConfig(reply);
    expect(access.offset).toBe(0);
    expect(access.size).toBe(size);
    return access.data.slice();
  }

  /**
   * `setup_vhost_user`: SET_FEATURES, SET_MEM_TABLE, SET_VRING_NUM for every ring, the inflight
   * area (GET_INFLIGHT_FD only when CH has none yet), then per ring ADDR, BASE (the ring's
   * current available index, or the saved bases), CALL, KICK, and SET_VRING_ENABLE(1) for all.
   */
  async setup(
    queues: readonly FrontendQueue[],
    guestFeatures: bigint,
    inflight: { description?: InflightDescription; fd?: number } | undefined,
    backendRequestFd?: number,
  ): Promise<void> {
    const acked =
      (guestFeatures | (this.ackedFeatures & bit(VHOST_USER_F_PROTOCOL_FEATURES))) &
      this.backendFeatures;
    expect(await this.set(Request.SET_FEATURES, u64Payload(acked))).toBe(0n);
    const guest = this.frontend.guest;
    expect(
      await this.set(
        Request.SET_MEM_TABLE,
        memoryTablePayload(guest.regions),
        guest.regions.map(() => guest.fd),
      ),
    ).toBe(0n);
    for (const queue of queues) {
      expect(
        await this.set(Request.SET_VRING_NUM, vringStatePayload(queue.index, queue.driver.size)),
      ).toBe(0n);
    }
    if (inflight) {
      if (inflight.fd === undefined) {
        const reply = await this.get(
          Request.GET_INFLIGHT_FD,
          inflightPayload({
            mmapSize: 0n,
            mmapOffset: 0n,
            numQueues: queues.length,
            queueSize: queues[0]!.driver.size,
          }),
        );
        const fd = reply.fds.shift();
        expect(fd).toBeDefined();
        inflight.fd = fd!;
        inflight.description = decodeInflight(reply);
        onCleanup(() => closeQuietly(fd!));
      }
      expect(
        await this.set(Request.SET_INFLIGHT_FD, inflightPayload(inflight.description!), [
          inflight.fd,
        ]),
      ).toBe(0n);
    }
    for (const queue of queues) {
      const driver = queue.driver;
      expect(
        await this.set(
          Request.SET_VRING_ADDR,
          vringAddressPayload({
            index: queue.index,
            flags: 0,
            desc: guest.userAddress(driver.descAddr),
            used: guest.userAddress(driver.deviceAddr),
            avail: guest.userAddress(driver.driverAddr),
            log: 0n,
          }),
        ),
      ).toBe(0n);
      // `queue.avail_idx(mem)`: what the guest has made available so far, not the used index.
      const availIdx = guest.memory.readU16(driver.driverAddr + 2);
      expect(await this.set(Request.SET_VRING_BASE, vringStatePayload(queue.index, availIdx))).toBe(
        0n,
      );
      expect(await this.set(Request.SET_VRING_CALL, u64Payload(queue.index), [queue.callFd])).toBe(
        0n,
      );
      expect(await this.set(Request.SET_VRING_KICK, u64Payload(queue.index), [queue.kickFd])).toBe(
        0n,
      );
    }
    await this.enable(queues, true);
    // Only the generic device (generic_vhost_user.rs) has a back-end request handler.
    if (backendRequestFd !== undefined) {
      expect(await this.set(Request.SET_BACKEND_REQ_FD, undefined, [backendRequestFd])).toBe(0n);
    }
  }

  /** `enable_vhost_user_vrings` (also all of `pause_vhost_user` / `resume_vhost_user`). */
  async enable(queues: readonly FrontendQueue[], on: boolean): Promise<void> {
    for (const queue of queues) {
      expect(
        await this.set(Request.SET_VRING_ENABLE, vringStatePayload(queue.index, on ? 1 : 0)),
      ).toBe(0n);
    }
  }

  /** `reset_vhost_user` (the guest reset the device): per ring, ENABLE(0) then GET_VRING_BASE. */
  async reset(queues: readonly FrontendQueue[]): Promise<number[]> {
    const bases: number[] = [];
    for (const queue of queues) {
      expect(await this.set(Request.SET_VRING_ENABLE, vringStatePayload(queue.index, 0))).toBe(0n);
      const reply = await this.get(Request.GET_VRING_BASE, vringStatePayload(queue.index, 0));
      bases.push(decodeVringState(reply).num);
    }
    return bases;
  }
}

/** A split ring as a Linux guest driver sets it up, before CH hands it to the back-end. */
function guestRing(guest: FrontendGuest, index: number, size: number, features: bigint) {
  const driver = new SplitDriverQueue<number>(guest.memory, {
    index,
    size,
    eventIdx: (features & featureBit(Feature.RING_EVENT_IDX)) !== 0n,
    indirect: (features & featureBit(Feature.RING_INDIRECT_DESC)) !== 0n,
    allocate: (bytes: number, align: number) => guest.allocate(bytes, align, 0),
  });
  const queue = new FrontendQueue(index, driver, guest);
  onCleanup(() => queue.release());
  return queue;
}

/** A back-end serving `device` with a CH front-end on a socketpair; `seen` lists the requests. */
function attach(device: VirtioDevice, guest: FrontendGuest) {
  const seen: string[] = [];
  const logs: string[] = [];
  const backend = new VhostUserBackend(device, {
    log: (line) => logs.push(line),
    trace: (line) => seen.push(line.split(' ')[0]!),
  });
  const frontend = TestFrontend.pair(backend, guest);
  onCleanup(async () => {
    frontend.close();
    await backend.close();
  });
  return { backend, frontend, ch: new CloudHypervisor(frontend), seen, logs };
}

function newGuest(): FrontendGuest {
  const guest = new FrontendGuest({ size: 8 << 20 });
  onCleanup(() => guest.release());
  return guest;
}

const blkHeader = (type: number, sector: number) => {
  const bytes = new Uint8Array(16);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, type, true);
  view.setBigUint64(8, BigInt(sector), true);
  return bytes;
};

/** The start sequence of `setup_vhost_user` for `rings` rings, with the inflight area. */
function startSequence(rings: number, getInflight: boolean): string[] {
  return [
    'SET_FEATURES',
    'SET_MEM_TABLE',
    ...Array.from({ length: rings }, () => 'SET_VRING_NUM'),
    ...(getInflight ? ['GET_INFLIGHT_FD'] : []),
    'SET_INFLIGHT_FD',
    ...Array.from({ length: rings }, () => [
      'SET_VRING_ADDR',
      'SET_VRING_BASE',
      'SET_VRING_CALL',
      'SET_VRING_KICK',
    ]).flat(),
    ...Array.from({ length: rings }, () => 'SET_VRING_ENABLE'),
  ];
}

describe('Cloud Hypervisor --disk vhost_user=on,socket=...,num_queues=2,queue_size=128', () => {
  it('creates, activates, resets and re-activates the device; I/O works on both queues', async () => {
    const guest = newGuest();
    const disk = new MemoryBackend({ size: 1 << 20 });
    const device = new BlockDevice({ backend: disk, queues: 2, serial: 'ch-disk' });
    const { ch, seen, backend } = attach(device, guest);

    // Blk::new: connect, negotiate, GET_QUEUE_NUM (MQ acked), GET_CONFIG of CH's 60-byte struct.
    await ch.connect();
    await ch.negotiate(chBlkFeatures(2), CH_PROTOCOL_FEATURES);
    expect(ch.ackedProtocol).toBe(
      pbit(ProtocolFeature.MQ) |
        pbit(ProtocolFeature.REPLY_ACK) |
        pbit(ProtocolFeature.CONFIG) |
        pbit(ProtocolFeature.INFLIGHT_SHMFD),
    );
    const queueNum = await ch.getQueueNum();
    // "vhost-user-blk requested too many queues": num_queues must not exceed GET_QUEUE_NUM.
    expect(queueNum).toBeGreaterThanOrEqual(2);
    const config = await ch.getConfig(60);
    const view = new DataView(config.buffer);
    expect(view.getBigUint64(0, true)).toBe(2048n); // capacity, 512-byte sectors
    expect(view.getUint16(34, true)).toBe(2); // num_queues (CH overwrites it with its own anyway)
    expect(seen).toEqual([
      'SET_OWNER',
      'GET_FEATURES',
      'GET_PROTOCOL_FEATURES',
      'SET_PROTOCOL_FEATURES',
      'GET_QUEUE_NUM',
      'GET_CONFIG',
    ]);
    // What the guest is offered: CH's list, cut down to what we offer. Split rings only (CH's
    // list has no RING_PACKED), and no IN_ORDER/NOTIFICATION_DATA/LOG_ALL (we offer none).
    const guestOffer = ch.ackedFeatures & ~bit(VHOST_USER_F_PROTOCOL_FEATURES);
    expect(guestOffer & featureBit(Feature.RING_PACKED)).toBe(0n);
    for (const n of [1, 2, 4, 6, 9, 10, 11, 12, 14]) expect(guestOffer & bit(n)).toBe(bit(n));
    expect(guestOffer & (bit(35) | bit(38) | bit(26))).toBe(0n);

    // The guest driver acks everything offered and sets DRIVER_OK: VhostUserCommon::activate.
    const guestFeatures = guestOffer;
    let queues = [0, 1].map((i) => guestRing(guest, i, 128, guestFeatures));
    seen.length = 0;
    const inflight = {};
    await ch.setup(queues, guestFeatures, inflight);
    expect(seen).toEqual(startSequence(2, true));
    await until(() => backend.activeQueues.length === 2, 2000, 'activation');
    expect(backend.negotiatedFeatures).toBe(guestFeatures);

    const payload = new Uint8Array(4096).map((_, i) => (i * 13 + 1) & 0xff);
    for (const [i, queue] of queues.entries()) {
      const write = await queue.send([blkHeader(1, 8 * (i + 1)), payload], [1]);
      expect(write.written).toEqual(new Uint8Array([0]));
      const read = await queue.send([blkHeader(0, 8 * (i + 1))], [4096, 1]);
      expect(read.written.subarray(0, 4096)).toEqual(payload);
    }
    expect(str((await queues[0]!.send([blkHeader(8, 0)], [20, 1])).written.subarray(0, 7))).toBe(
      'ch-disk',
    );

    // The guest resets the device (reboot, driver reload): reset_vhost_user.
    seen.length = 0;
    const bases = await ch.reset(queues);
    expect(seen).toEqual([
      'SET_VRING_ENABLE',
      'GET_VRING_BASE',
      'SET_VRING_ENABLE',
      'GET_VRING_BASE',
    ]);
    expect(bases).toEqual([3, 2]); // requests taken from each ring
    expect(backend.activeQueues).toEqual([]);

    // The driver comes back with new rings; CH activates again with a fresh inflight area.
    queues = [0, 1].map((i) => guestRing(guest, i, 128, guestFeatures));
    seen.length = 0;
    await ch.setup(queues, guestFeatures, {});
    expect(seen).toEqual(startSequence(2, true));
    for (const [i, queue] of queues.entries()) {
      const read = await queue.send([blkHeader(0, 8 * (i + 1))], [4096, 1]);
      expect(read.written.subarray(0, 4096)).toEqual(payload);
      expect(read.written[4096]).toBe(0);
    }
  });

  it('serves requests the guest posted while the back-end was gone after CH reconnects (base = available index)', async () => {
    const guest = newGuest();
    const guestFeatures =
      featureBit(Feature.VERSION_1) |
      featureBit(Feature.RING_EVENT_IDX) |
      featureBit(Feature.RING_INDIRECT_DESC);
    // The echo device holds requests like a disk with I/O in flight, and drops them on reset,
    // as a back-end that crashed never finishes them.
    const first = new EchoDevice({ queues: 1, hold: true, dropOnReset: true });
    const a = attach(first, guest);
    await a.ch.connect();
    await a.ch.negotiate(
      CH_DEFAULT_VIRTIO_FEATURES | featureBit(Feature.RING_INDIRECT_DESC),
      CH_PROTOCOL_FEATURES,
    );
    const queue = guestRing(guest, 0, 64, guestFeatures);
    const inflight: { description?: InflightDescription; fd?: number } = {};
    await a.ch.setup([queue], guestFeatures, inflight);
    const held = ['one', 'two', 'three'];
    const heldTokens = held.map((m) => queue.post([text(m)], [m.length]));
    queue.kick();
    await until(() => first.held[0]!.length === 3, 2000, 'held requests');

    // The back-end dies (HUP): CH's epoll handler reconnects. Meanwhile the guest keeps posting.
    a.frontend.close();
    await a.backend.close();
    const late = ['four', 'five'];
    const lateTokens = late.map((m) => queue.post([text(m)], [m.length]));
    queue.kick();

    // reinitialize_vhost_user: SET_OWNER, GET_FEATURES, SET_PROTOCOL_FEATURES (no GET first),
    // then setup_vhost_user with CH's inflight area (no GET_INFLIGHT_FD) and, as no IN_ORDER was
    // negotiated, SET_VRING_BASE = the ring's available index, past everything posted.
    const second = new EchoDevice({ queues: 1 });
    const b = attach(second, guest);
    b.ch.ackedFeatures = a.ch.ackedFeatures;
    b.ch.ackedProtocol = a.ch.ackedProtocol;
    await b.ch.connect();
    b.ch.setProtocolFeaturesAgain();
    await b.ch.setup([queue], guestFeatures, inflight);
    expect(b.seen).toEqual([
      'SET_OWNER',
      'GET_FEATURES',
      'SET_PROTOCOL_FEATURES',
      ...startSequence(1, false),
    ]);
    // CH does not kick after this reconnect: the back-end must look at the ring by itself.
    const answers = await Promise.all([...heldTokens, ...lateTokens].map((t) => queue.wait(t)));
    expect(answers.map((answer) => str(answer.written))).toEqual(
      [...held, ...late].map((m) => [...m].reverse().join('')),
    );
    expect(second.handled).toBe(5);
  });

  // CH's blk.rs `write_config` forwards the guest's write of `writeback`
  // (VIRTIO_BLK_F_CONFIG_WCE, offered by device-blk) as SET_CONFIG with flags
  // VhostUserConfigFlags::WRITABLE = 1 (vhost message.rs), which vhost-user.rst calls a
  // live-migration write. A back-end that refuses it leaves the device in its old cache mode while
  // CH only logs "Failed setting vhost-user-blk configuration".
  it('applies the guest writing `writeback` (SET_CONFIG with flags 1, as CH sends it)', async () => {
    const guest = newGuest();
    const device = new BlockDevice({ backend: new MemoryBackend({ size: 1 << 20 }) });
    const { ch } = attach(device, guest);
    await ch.connect();
    await ch.negotiate(chBlkFeatures(1), CH_PROTOCOL_FEATURES);
    await ch.getQueueNum();
    expect((await ch.getConfig(60))[32]).toBe(1); // writeback
    const guestFeatures = ch.ackedFeatures & ~bit(VHOST_USER_F_PROTOCOL_FEATURES);
    await ch.setup([guestRing(guest, 0, 128, guestFeatures)], guestFeatures, {});
    const status = await ch.set(
      Request.SET_CONFIG,
      configPayload(32, CH_CONFIG_FLAGS_WRITABLE, new Uint8Array([0])),
    );
    expect(status).toBe(0n);
    expect((await ch.getConfig(60))[32]).toBe(0);
  });
});

/**
 * A device shaped like @virtkit/device-net's `NetDevice` as this back-end sees it: type 1, queue
 * pairs plus a control queue (2 × pairs + 1 queues), the same kind of feature offer (MAC,
 * STATUS, MTU, MRG_RXBUF, CTRL_VQ and the control features, MQ with several pairs) and a 24-byte
 * configuration space. It loops frames: a transmitted frame is kept, an injected one fills the
 * next receive buffer of its pair. (device-net is not a dependency of this package.)
 */
class NetShapedDevice implements VirtioDevice {
  readonly deviceType = DeviceType.NET;
  readonly features: bigint;
  readonly queues: readonly { maxSize: number }[];
  readonly config = new ConfigSpace(24);
  context: ActivationContext | undefined;
  readonly sent: string[] = [];
  readonly #waiting: Uint8Array[][];

  constructor(readonly pairs: number) {
    this.features =
      featureBit(Feature.RING_INDIRECT_DESC) |
      featureBit(Feature.RING_EVENT_IDX) |
      featureBit(Feature.RING_PACKED) |
      [NET.MAC, NET.STATUS, NET.MTU, NET.MRG_RXBUF, NET.CTRL_VQ, 18, 19, 20, 21, 23].reduce(
        (mask, n) => mask | bit(n),
        0n,
      ) |
      (pairs > 1 ? bit(NET_MQ) : 0n);
    this.queues = Array.from({ length: 2 * pairs + 1 }, () => ({ maxSize: 256 }));
    this.#waiting = Array.from({ length: pairs }, () => []);
    this.config.setBytes(0, new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
    this.config.setU16(8, pairs);
    this.config.setU16(10, 1500);
  }

  activate(context: ActivationContext): void {
    this.context = context;
    for (let pair = 0; pair < this.pairs; pair++) this.#fill(pair);
  }

  /** A frame from the outside world for pair `pair` (kept until a receive buffer is there). */
  inject(pair: number, frame: string): void {
    this.#waiting[pair]!.push(text(frame));
    this.#fill(pair);
  }

  queueNotify(index: number): void {
    const queue = this.context?.queues[index];
    if (!queue) return;
    if (index % 2 === 0) this.#fill(index / 2);
    else this.#transmit(index, queue);
  }

  async reset(): Promise<void> {
    this.context = undefined;
  }

  #transmit(index: number, queue: DeviceQueue): void {
    do {
      queue.disableNotifications();
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        const bytes = new Uint8Array(chain.readableLength);
        chain.reader().read(bytes);
        this.sent.push(str(bytes.subarray(12)));
        queue.addUsed(chain, 0);
      }
      if (queue.publishUsed()) this.context?.signalUsed(index);
    } while (queue.enableNotifications());
  }

  #fill(pair: number): void {
    const queue = this.context?.queues[2 * pair];
    const waiting = this.#waiting[pair]!;
    if (!queue) return;
    while (waiting.length > 0) {
      const chain = queue.pop();
      if (!chain) break;
      const frame = waiting.shift()!;
      const header = new Uint8Array(12);
      header[10] = 1; // num_buffers
      const writer = chain.writer();
      writer.write(header);
      writer.write(frame);
      queue.addUsed(chain, 12 + frame.length);
    }
    if (queue.publishUsed()) this.context?.signalUsed(2 * pair);
  }
}

const netFrame = (payload: string) => [new Uint8Array(12), text(payload)];

describe('Cloud Hypervisor --net vhost_user=on,socket=...,num_queues=4', () => {
  async function started(guest: FrontendGuest) {
    const device = new NetShapedDevice(2);
    const parts = attach(device, guest);
    const { ch } = parts;
    await ch.connect();
    await ch.negotiate(CH_NET_FEATURES, CH_PROTOCOL_FEATURES);
    const queueNum = await ch.getQueueNum();
    expect(queueNum).toBeGreaterThanOrEqual(4); // "requested too many queues" otherwise
    // CONFIG acked: CH reads its 17-byte VirtioNetConfig; the MAC comes from the back-end
    // when `mac=` is not given.
    const config = await ch.getConfig(17);
    expect([...config.subarray(0, 6)]).toEqual([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
    // Net::guest_avail_features: the back-end's acked set, plus MAC, plus STATUS and
    // GUEST_ANNOUNCE because CTRL_VQ is there (CH serves the control queue itself).
    const backendAcked = ch.ackedFeatures & ~bit(VHOST_USER_F_PROTOCOL_FEATURES);
    expect(backendAcked & bit(NET.CTRL_VQ)).toBe(bit(NET.CTRL_VQ));
    expect(backendAcked & bit(NET_MQ)).toBe(bit(NET_MQ));
    const guestFeatures = backendAcked | bit(NET.MAC) | bit(NET.STATUS) | bit(NET_GUEST_ANNOUNCE);
    // CH gives the back-end the data rings only (the control queue is removed before
    // VhostUserCommon::activate), and SET_FEATURES carries every guest-acked bit the back-end
    // offered, CTRL_VQ and STATUS included.
    const queues = [0, 1, 2, 3].map((i) => guestRing(guest, i, 256, guestFeatures));
    parts.seen.length = 0;
    await ch.setup(queues, guestFeatures, {});
    expect(parts.seen).toEqual(startSequence(4, true));
    await until(() => parts.backend.activeQueues.length === 4, 2000, 'activation');
    expect(parts.backend.activeQueues).toEqual([0, 1, 2, 3]);
    expect(device.context?.features).toBe(guestFeatures);
    return { ...parts, device, queues };
  }

  it('starts the four data rings without the control queue; frames go both ways on both pairs', async () => {
    const guest = newGuest();
    const { device, queues } = await started(guest);
    for (const pair of [0, 1]) {
      const rx = queues[2 * pair]!;
      const tx = queues[2 * pair + 1]!;
      const buffers = [0, 1, 2].map(() => rx.post([], [1526]));
      rx.kick();
      await tx.send(netFrame(`out on pair ${pair}`));
      device.inject(pair, `in on pair ${pair}`);
      const received = await rx.wait(buffers[0]!);
      expect(str(received.written.subarray(12))).toBe(`in on pair ${pair}`);
    }
    expect(device.sent).toEqual(['out on pair 0', 'out on pair 1']);
  });

  // CH pauses a vhost-user device (vm.pause, before a snapshot or live migration) with
  // `pause_vhost_user`, which only sends SET_VRING_ENABLE(0) for every ring (vu_common_ctrl.rs);
  // GET_VRING_BASE is only sent with DEVICE_STATE, which we do not offer. vhost-user.rst and the
  // vhost crate (frontend.rs, `set_vring_enable`) say a back-end must not pass data to or from a
  // disabled ring.
  it('stops moving data while CH has the rings disabled (pause), resumes on enable', async () => {
    const guest = newGuest();
    const { device, ch, queues } = await started(guest);
    const rx = queues[0]!;
    const tx = queues[1]!;
    const buffer = rx.post([], [1526]);
    rx.kick();
    await ticks(5);
    await ch.enable(queues, false); // pause_vhost_user
    device.inject(0, 'while paused');
    const token = tx.post(netFrame('sent while paused'));
    tx.kick(true);
    await ticks(20);
    expect(rx.completed(buffer)).toBe(false);
    expect(device.sent).toEqual([]);
    await ch.enable(queues, true); // resume_vhost_user
    expect(str((await rx.wait(buffer)).written.subarray(12))).toBe('while paused');
    await tx.wait(token);
    expect(device.sent).toEqual(['sent while paused']);
  });
});

describe('Cloud Hypervisor --generic-vhost-user socket=...,device_type=N,queue_sizes=[64,64] (v52.0+)', () => {
  it('starts a device it knows nothing about; config reads go to the back-end; config changes come back', async () => {
    const guest = newGuest();
    const device = new EchoDevice({ queues: 2 });
    const { ch, seen, backend } = attach(device, guest);
    // GenericVhostUser::new: DEFAULT_VIRTIO_FEATURES only (no device-specific bit reaches the
    // guest), the blk/net protocol features plus BACKEND_REQ; GET_QUEUE_NUM; no GET_CONFIG.
    await ch.connect();
    await ch.negotiate(
      CH_DEFAULT_VIRTIO_FEATURES,
      CH_PROTOCOL_FEATURES | pbit(ProtocolFeature.BACKEND_REQ),
    );
    expect(ch.ackedProtocol & pbit(ProtocolFeature.BACKEND_REQ)).not.toBe(0n);
    expect(await ch.getQueueNum()).toBeGreaterThanOrEqual(2);
    const guestFeatures = ch.ackedFeatures & ~bit(VHOST_USER_F_PROTOCOL_FEATURES);
    expect(guestFeatures & bit(0)).toBe(0n); // the echo device's own feature bit is not offered
    const queues = [0, 1].map((i) => guestRing(guest, i, 64, guestFeatures));
    const [ours, theirs] = socketpair({ nonBlocking: true });
    onCleanup(() => closeQuietly(ours));
    seen.length = 0;
    await ch.setup(queues, guestFeatures, {}, theirs);
    closeQuietly(theirs);
    expect(seen).toEqual([...startSequence(2, true), 'SET_BACKEND_REQ_FD']);
    await until(() => backend.activeQueues.length === 2, 2000, 'activation');
    for (const [i, queue] of queues.entries()) {
      const answer = await queue.send([text(`generic ${i}`)], [9]);
      expect(str(answer.written)).toBe([...`generic ${i}`].reverse().join(''));
    }
    // read_config: each guest read is a GET_CONFIG with flags 0 (VhostUserConfigFlags::empty());
    // an empty ("failed") reply would make CH panic.
    const reply = await ch.get(Request.GET_CONFIG, configPayload(4, 0, new Uint8Array(4)));
    expect(new DataView(decodeConfig(reply).data.slice().buffer).getUint32(0, true)).toBe(2);
    // A change on the device side reaches CH as CONFIG_CHANGE_MSG (a config interrupt).
    device.config.setU32(12, 7);
    await waitReadable(ours);
    const header = new Uint8Array(HEADER_SIZE);
    expect(recvmsg(ours, header)?.bytes).toBe(HEADER_SIZE);
    expect(new DataView(header.buffer).getUint32(0, true)).toBe(BackendRequest.CONFIG_CHANGE_MSG);
  });
});
