/**
 * Queue processing for virtio-net (§5.1.6): transmit queues feed the backend, the backend feeds
 * receive queues, and the control queue changes filters, the MAC, queue pairs and the announce
 * state. Given queues, a backend and callbacks; it knows nothing of event loops or transports.
 *
 * Backpressure both ways: a received frame that finds no guest buffer is held and the backend is
 * not asked for more until the guest posts buffers (its kick calls {@link NetHandler.notify});
 * a congested backend stops transmit processing until it reports it is writable again. Frames
 * that cannot ever be delivered or sent are dropped and counted in {@link NetStats}.
 */

import {
  type DescriptorChain,
  type DeviceQueue,
  featureBit,
  type ViolationSink,
} from '@virtkit/core';
import type { NetBackend, SendResult } from './backends/backend.js';
import {
  ETH_ALEN,
  ETH_HLEN,
  MAX_FRAME_SIZE,
  NET_ERR,
  NET_HDR_F_DATA_VALID,
  NET_HDR_F_NEEDS_CSUM,
  NET_HDR_GSO_ECN,
  NET_HDR_GSO_NONE,
  NET_HDR_GSO_TCPV4,
  NET_HDR_GSO_TCPV6,
  NET_HDR_GSO_UDP,
  NET_HDR_SIZE,
  NET_OK,
  NetCtrl,
  NetFeature,
  VLAN_HLEN,
  VLAN_ID_COUNT,
} from './constants.js';
import type { RxFilter } from './filter.js';
import {
  checkTransmitHeader,
  completeChecksum,
  flowHash,
  type NetHeader,
  netHeaderSize,
  parseControlCommand,
  parseMacTables,
  plainNetHeader,
  readNetHeader,
  vlanId,
  writeNetHeader,
} from './requests.js';

/** Counters of a network device. Plain numbers; read them any time. */
export interface NetStats {
  /** Frames and bytes (without virtio header) the guest transmitted and the backend took. */
  txFrames: number;
  txBytes: number;
  /** Frames the guest transmitted that were dropped: malformed header or chain. */
  txErrors: number;
  /** ...larger than the MTU (when negotiated) or the largest frame, or shorter than an Ethernet header. */
  txDroppedSize: number;
  /** ...while the backend's link was down. */
  txDroppedLink: number;
  /** Frames and bytes delivered to the guest. */
  rxFrames: number;
  rxBytes: number;
  /** Received frames dropped by the receive filter (RX modes, MAC and VLAN tables). */
  rxFiltered: number;
  /** ...too large for the guest's buffers or MTU. */
  rxDroppedSize: number;
  /** ...carrying an offload the guest did not negotiate (GSO without GUEST_TSO*). */
  rxDroppedOffload: number;
  /** ...malformed as they came from the backend (shorter than an Ethernet header). */
  rxErrors: number;
  /** ...for a receive queue the driver did not enable, or that broke. */
  rxDroppedNoQueue: number;
  /** Partial checksums the device completed because the guest lacks GUEST_CSUM. */
  rxChecksumsCompleted: number;
  /** Control commands answered VIRTIO_NET_OK / VIRTIO_NET_ERR, and ones that could not be answered. */
  ctrlOk: number;
  ctrlErr: number;
  ctrlUnanswerable: number;
}

/** Fresh counters. */
export function createNetStats(): NetStats {
  return {
    txFrames: 0,
    txBytes: 0,
    txErrors: 0,
    txDroppedSize: 0,
    txDroppedLink: 0,
    rxFrames: 0,
    rxBytes: 0,
    rxFiltered: 0,
    rxDroppedSize: 0,
    rxDroppedOffload: 0,
    rxErrors: 0,
    rxDroppedNoQueue: 0,
    rxChecksumsCompleted: 0,
    ctrlOk: 0,
    ctrlErr: 0,
    ctrlUnanswerable: 0,
  };
}

/** What the handler asks of the device for control commands that change device state. */
export interface NetControlTarget {
  /** VIRTIO_NET_CTRL_MAC_ADDR_SET: update `mac` in the config space before the command is used. */
  setMac(mac: Uint8Array): void;
  /** VIRTIO_NET_CTRL_ANNOUNCE_ACK: clear VIRTIO_NET_S_ANNOUNCE before the command is used. */
  ackAnnounce(): void;
}

/** Everything a {@link NetHandler} works with. */
export interface NetHandlerOptions {
  /** Negotiated features. */
  readonly features: bigint;
  /** The activated queues, in device order (rx0, tx0, rx1, tx1, ..., ctrl). */
  readonly queues: readonly (DeviceQueue | undefined)[];
  /** `max_virtqueue_pairs` the device offers. */
  readonly maxPairs: number;
  /** The MTU in the config space (enforced when VIRTIO_NET_F_MTU was negotiated). */
  readonly mtu: number;
  readonly backend: NetBackend;
  readonly filter: RxFilter;
  readonly stats: NetStats;
  readonly control: NetControlTarget;
  /** Signals used buffers on queue `index` to the driver. */
  readonly signalUsed: (index: number) => void;
  readonly reportViolation: ViolationSink;
  /**
   * Runs `task` later, after pending I/O (default `setImmediate`/`setTimeout`). Used to yield
   * when a receive burst exceeds its budget so one busy device cannot starve the event loop.
   */
  readonly defer?: (task: () => void) => void;
}

/** Frames one receive pump moves before yielding. */
const RX_BUDGET = 1024;
/** Flows remembered for receive steering (oldest forgotten first). */
const FLOW_TABLE_SIZE = 4096;
/** Bytes of a frame read to find its flow (Ethernet + VLAN + IPv6 + ports). */
const FLOW_HEAD_BYTES = ETH_HLEN + VLAN_HLEN + 40 + 4;
/** Largest control command accepted: a MAC table set with two 64K-entry tables is already absurd. */
const MAX_CONTROL_BYTES = 2 + 8 + 2 * 65536 * ETH_ALEN;

const defaultDefer = (task: () => void): void => {
  if (typeof setImmediate === 'function') setImmediate(task);
  else setTimeout(task, 0);
};

type Delivery = 'done' | 'wait';

/**
 * Processes one activated virtio-net device's queues. Created at activation, dropped at reset
 * ({@link stop}).
 */
export class NetHandler {
  readonly #features: bigint;
  readonly #queues: readonly (DeviceQueue | undefined)[];
  readonly #backend: NetBackend;
  readonly #filter: RxFilter;
  readonly #stats: NetStats;
  readonly #control: NetControlTarget;
  readonly #signalUsed: (index: number) => void;
  readonly #report: ViolationSink;
  readonly #defer: (task: () => void) => void;
  /** Header size in guest buffers (10 or 12). */
  readonly #headerSize: number;
  readonly #mergeable: boolean;
  /** Queue pairs the driver may use: `max_virtqueue_pairs` with MQ, else 1. */
  readonly #usablePairs: number;
  readonly #controlIndex: number;
  /** Largest non-GSO frame: MTU plus Ethernet and VLAN headers when MTU was negotiated. */
  readonly #mtuLimit: number;
  #activePairs = 1;
  #stopped = false;

  // Receive state, per backend channel and per pair.
  readonly #held: (Uint8Array | null)[];
  readonly #reserved: DescriptorChain[][];
  readonly #touchedRx = new Set<number>();
  /** Whether kicks are enabled on each receive queue (they are at ring setup). */
  readonly #rxNotifying: boolean[];
  #pumping = false;
  #pumpAgain = false;
  #pumpDeferred = false;
  readonly #flows = new Map<number, number>();

  // Transmit state, per pair and per channel.
  readonly #txPending: (DescriptorChain | undefined)[];
  readonly #txBusy: boolean[];
  readonly #txAgain: boolean[];
  readonly #txBlocked: boolean[];
  readonly #txHeader = new Uint8Array(NET_HDR_SIZE);
  readonly #flowHead = new Uint8Array(FLOW_HEAD_BYTES);

  constructor(options: NetHandlerOptions) {
    this.#features = options.features;
    this.#queues = options.queues;
    this.#backend = options.backend;
    this.#filter = options.filter;
    this.#stats = options.stats;
    this.#control = options.control;
    this.#signalUsed = options.signalUsed;
    this.#report = options.reportViolation;
    this.#defer = options.defer ?? defaultDefer;
    this.#headerSize = netHeaderSize(options.features);
    this.#mergeable = this.#has(NetFeature.MRG_RXBUF);
    this.#usablePairs = this.#has(NetFeature.MQ) ? options.maxPairs : 1;
    // §5.1.2: the control queue follows the last pair the driver can use, and exists only
    // with CTRL_VQ (-1: kicks on that index are not control commands).
    this.#controlIndex = this.#has(NetFeature.CTRL_VQ) ? 2 * this.#usablePairs : -1;
    this.#mtuLimit = this.#has(NetFeature.MTU)
      ? options.mtu + ETH_HLEN + VLAN_HLEN
      : MAX_FRAME_SIZE;
    const channels = this.#backend.channels;
    this.#held = new Array<Uint8Array | null>(channels).fill(null);
    this.#txBlocked = new Array<boolean>(channels).fill(false);
    this.#reserved = Array.from({ length: this.#usablePairs }, () => []);
    this.#rxNotifying = new Array<boolean>(this.#usablePairs).fill(true);
    this.#txPending = new Array<DescriptorChain | undefined>(this.#usablePairs).fill(undefined);
    this.#txBusy = new Array<boolean>(this.#usablePairs).fill(false);
    this.#txAgain = new Array<boolean>(this.#usablePairs).fill(false);
  }

  /** Queue pairs in use (1 until VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET). */
  get activePairs(): number {
    return this.#activePairs;
  }

  /** Index of the control queue for the negotiated features (-1 without CTRL_VQ). */
  get controlIndex(): number {
    return this.#controlIndex;
  }

  /** Frames held because the guest had no receive buffers for them. */
  get heldFrames(): number {
    return this.#held.filter((f) => f !== null).length;
  }

  /** The driver kicked queue `index`. */
  notify(index: number): void {
    if (this.#stopped) return;
    if (index === this.#controlIndex) {
      this.#processControl();
    } else if (index < 2 * this.#usablePairs) {
      if (index % 2 === 0) this.pumpReceive();
      else this.#processTransmit(index >> 1);
    }
  }

  /** Starts receiving: frames may already wait in the backend. */
  start(): void {
    this.pumpReceive();
  }

  /** Stops all processing (device reset). Held frames and reserved buffers are dropped. */
  stop(): void {
    this.#stopped = true;
    this.#held.fill(null);
    for (const list of this.#reserved) list.length = 0;
    this.#txPending.fill(undefined);
  }

  /** The backend has frames again on `channel`. */
  onReadable(_channel: number): void {
    this.pumpReceive();
  }

  /** The backend can take frames again on `channel`. */
  onWritable(channel: number): void {
    if (this.#stopped) return;
    this.#txBlocked[channel] = false;
    for (let pair = 0; pair < this.#usablePairs; pair++) {
      if (this.#channelOf(pair) === channel) this.#processTransmit(pair);
    }
  }

  // ---------------------------------------------------------------- receive

  /** Moves frames from the backend into receive buffers until either runs out. */
  pumpReceive(): void {
    if (this.#stopped) return;
    if (this.#pumping) {
      this.#pumpAgain = true;
      return;
    }
    this.#pumping = true;
    try {
      do {
        this.#pumpAgain = false;
        let budgetLeft = true;
        const channels = this.#backend.channels;
        for (let channel = 0; channel < channels; channel++) {
          if (!this.#pumpChannel(channel)) budgetLeft = false;
        }
        this.#flushReceive();
        if (!budgetLeft && !this.#pumpDeferred) {
          // Let other I/O run, then continue where the budget stopped us.
          this.#pumpDeferred = true;
          this.#defer(() => {
            this.#pumpDeferred = false;
            this.pumpReceive();
          });
        }
      } while (this.#pumpAgain && !this.#stopped);
    } finally {
      this.#pumping = false;
    }
  }

  /** Returns false if the budget ran out with frames possibly left. */
  #pumpChannel(channel: number): boolean {
    for (let moved = 0; moved < RX_BUDGET; moved++) {
      if (this.#stopped) return true;
      const frame = this.#held[channel] ?? this.#backend.receive(channel);
      this.#held[channel] = null;
      if (!frame) return true;
      if (this.#receiveFrame(channel, frame) === 'wait') {
        this.#held[channel] = frame;
        return true;
      }
    }
    return false;
  }

  #receiveFrame(channel: number, frame: Uint8Array): Delivery {
    const stats = this.#stats;
    const backendHeader = this.#backend.vnetHeader ? NET_HDR_SIZE : 0;
    if (frame.length < backendHeader + ETH_HLEN) {
      stats.rxErrors++;
      return 'done';
    }
    const payload = frame.subarray(backendHeader);
    if (!this.#filter.accepts(payload)) {
      stats.rxFiltered++;
      return 'done';
    }
    const header = backendHeader ? readNetHeader(frame) : plainNetHeader();
    if (!this.#adaptReceiveHeader(header, frame, payload)) return 'done';
    const gsoBase = header.gsoType & ~NET_HDR_GSO_ECN;
    const limit =
      gsoBase === NET_HDR_GSO_NONE
        ? vlanId(payload) === undefined
          ? this.#mtuLimit - VLAN_HLEN
          : this.#mtuLimit
        : MAX_FRAME_SIZE;
    if (payload.length > limit) {
      stats.rxDroppedSize++;
      return 'done';
    }
    const pair = this.#steer(channel, payload);
    const queue = this.#queues[2 * pair];
    if (!queue || queue.broken) {
      stats.rxDroppedNoQueue++;
      return 'done';
    }
    return this.#mergeable
      ? this.#deliverMergeable(pair, queue, header, payload)
      : this.#deliverSingle(pair, queue, header, payload);
  }

  /**
   * Makes a backend header acceptable to this guest (§5.1.6.4.1): offloads it did not negotiate
   * are undone (a partial checksum is completed in place) or, for GSO, the frame is dropped.
   */
  #adaptReceiveHeader(header: NetHeader, frame: Uint8Array, payload: Uint8Array): boolean {
    const guestCsum = this.#has(NetFeature.GUEST_CSUM);
    if (header.gsoType !== NET_HDR_GSO_NONE) {
      const base = header.gsoType & ~NET_HDR_GSO_ECN;
      const feature =
        base === NET_HDR_GSO_TCPV4
          ? NetFeature.GUEST_TSO4
          : base === NET_HDR_GSO_TCPV6
            ? NetFeature.GUEST_TSO6
            : base === NET_HDR_GSO_UDP
              ? NetFeature.GUEST_UFO
              : undefined;
      const ecnOk = !(header.gsoType & NET_HDR_GSO_ECN) || this.#has(NetFeature.GUEST_ECN);
      if (feature === undefined || !this.#has(feature) || !ecnOk) {
        this.#stats.rxDroppedOffload++;
        return false;
      }
    }
    if (header.flags & NET_HDR_F_NEEDS_CSUM && !guestCsum) {
      if (!completeChecksum(payload, header.csumStart, header.csumOffset)) {
        this.#stats.rxErrors++;
        return false;
      }
      // The frame may be held and looked at again: never complete the checksum twice.
      frame[0]! &= ~NET_HDR_F_NEEDS_CSUM;
      this.#stats.rxChecksumsCompleted++;
    }
    // Without GUEST_CSUM flags must be zero; RSC_INFO needs RSC_EXT, which is never offered.
    header.flags = guestCsum ? header.flags & (NET_HDR_F_NEEDS_CSUM | NET_HDR_F_DATA_VALID) : 0;
    if (!guestCsum) {
      header.csumStart = 0;
      header.csumOffset = 0;
    }
    if (header.gsoType === NET_HDR_GSO_NONE) {
      header.gsoSize = 0;
      header.hdrLen = 0;
    }
    return true;
  }

  /** Without MRG_RXBUF: the whole frame in one chain (§5.1.6.3.2). */
  #deliverSingle(
    pair: number,
    queue: DeviceQueue,
    header: NetHeader,
    payload: Uint8Array,
  ): Delivery {
    const needed = this.#headerSize + payload.length;
    const reserved = this.#reserved[pair]!;
    for (;;) {
      const chain = reserved.pop() ?? this.#popReceive(pair, queue);
      if (!chain) return 'wait';
      if (!this.#usableReceiveChain(pair, queue, chain, this.#headerSize + ETH_HLEN)) continue;
      if (chain.writableLength < needed) {
        // The buffer is fine for smaller frames: keep it, drop this frame.
        reserved.push(chain);
        this.#stats.rxDroppedSize++;
        return 'done';
      }
      header.numBuffers = 1;
      const writer = chain.writer();
      const bytes = new Uint8Array(this.#headerSize);
      writeNetHeader(header, bytes, 0, this.#headerSize);
      writer.write(bytes);
      writer.write(payload);
      queue.addUsed(chain, needed);
      this.#received(pair, payload.length);
      return 'done';
    }
  }

  /** With MRG_RXBUF: as many chains as the frame needs, all but the last filled (§5.1.6.4.2). */
  #deliverMergeable(
    pair: number,
    queue: DeviceQueue,
    header: NetHeader,
    payload: Uint8Array,
  ): Delivery {
    const needed = this.#headerSize + payload.length;
    const reserved = this.#reserved[pair]!;
    let capacity = 0;
    for (const chain of reserved) capacity += chain.writableLength;
    while (capacity < needed) {
      if (reserved.length >= queue.size) {
        // Every buffer the ring can hold is not enough: this frame can never be delivered.
        this.#stats.rxDroppedSize++;
        return 'done';
      }
      const chain = this.#popReceive(pair, queue);
      if (!chain) return 'wait';
      if (!this.#usableReceiveChain(pair, queue, chain, this.#headerSize)) continue;
      reserved.push(chain);
      capacity += chain.writableLength;
    }
    let count = 0;
    for (let filled = 0; filled < needed; count++) filled += reserved[count]!.writableLength;
    header.numBuffers = count;
    const headerBytes = new Uint8Array(this.#headerSize);
    writeNetHeader(header, headerBytes, 0, this.#headerSize);
    let source: Uint8Array = headerBytes;
    let sourceOffset = 0;
    let payloadStarted = false;
    for (let i = 0; i < count; i++) {
      const chain = reserved[i]!;
      const writer = chain.writer();
      while (writer.remaining > 0) {
        if (sourceOffset === source.length) {
          if (payloadStarted) break;
          source = payload;
          sourceOffset = 0;
          payloadStarted = true;
          continue;
        }
        const step = writer.writeSome(source.subarray(sourceOffset));
        sourceOffset += step;
      }
      queue.addUsed(chain, writer.position);
    }
    reserved.splice(0, count);
    this.#received(pair, payload.length);
    return 'done';
  }

  /**
   * A receive chain must be able to hold at least `minimum` bytes; one that cannot is a driver
   * mistake (§5.1.6.3.1) and is returned unused so it does not block the queue.
   */
  #usableReceiveChain(
    pair: number,
    queue: DeviceQueue,
    chain: DescriptorChain,
    minimum: number,
  ): boolean {
    if (chain.writableLength >= minimum) return true;
    this.#violation(
      'NET_RX_BUFFER_TOO_SMALL',
      `receive buffer of ${chain.writableLength} writable bytes on queue ${queue.index} cannot hold ${minimum} bytes`,
      queue.index,
    );
    queue.addUsed(chain, 0);
    this.#touchedRx.add(pair);
    return false;
  }

  /**
   * Pops a receive chain. Kicks on a receive queue matter only while a frame waits for buffers,
   * so they are asked for when the queue runs dry (re-checking, so none is lost) and turned off
   * again once buffers flow (QEMU's virtio-net does the same).
   */
  #popReceive(pair: number, queue: DeviceQueue): DescriptorChain | null {
    let chain = queue.pop();
    if (!chain && queue.enableNotifications()) chain = queue.pop();
    if (!chain) {
      this.#rxNotifying[pair] = true;
      return null;
    }
    if (this.#rxNotifying[pair]) {
      queue.disableNotifications();
      this.#rxNotifying[pair] = false;
    }
    return chain;
  }

  #received(pair: number, bytes: number): void {
    this.#stats.rxFrames++;
    this.#stats.rxBytes += bytes;
    this.#touchedRx.add(pair);
  }

  #flushReceive(): void {
    for (const pair of this.#touchedRx) {
      const queue = this.#queues[2 * pair];
      if (queue?.publishUsed()) this.#signalUsed(2 * pair);
    }
    this.#touchedRx.clear();
  }

  /**
   * Picks the receive pair for a frame: the backend's channel when it has one per pair,
   * otherwise the pair that last transmitted the same flow (§5.1.6.5.5), otherwise one chosen
   * by the flow's hash so a flow stays on one queue.
   */
  #steer(channel: number, payload: Uint8Array): number {
    if (this.#backend.channels > 1) return channel < this.#activePairs ? channel : 0;
    if (this.#activePairs === 1) return 0;
    const hash = flowHash(payload, true);
    if (hash === undefined) return 0;
    const pair = this.#flows.get(hash);
    if (pair !== undefined && pair < this.#activePairs) return pair;
    return hash % this.#activePairs;
  }

  #rememberFlow(pair: number, chain: DescriptorChain): void {
    const reader = chain.reader();
    reader.skip(this.#headerSize);
    const head = this.#flowHead.subarray(0, reader.readSome(this.#flowHead));
    const hash = flowHash(head, false);
    if (hash === undefined) return;
    this.#flows.delete(hash);
    this.#flows.set(hash, pair);
    if (this.#flows.size > FLOW_TABLE_SIZE) {
      const oldest = this.#flows.keys().next().value;
      if (oldest !== undefined) this.#flows.delete(oldest);
    }
  }

  // --------------------------------------------------------------- transmit

  #channelOf(pair: number): number {
    return this.#backend.channels > 1 ? pair : 0;
  }

  #processTransmit(pair: number): void {
    const queue = this.#queues[2 * pair + 1];
    if (!queue || this.#stopped) return;
    const channel = this.#channelOf(pair);
    if (this.#txBlocked[channel]) return;
    if (this.#txBusy[pair]) {
      this.#txAgain[pair] = true;
      return;
    }
    this.#txBusy[pair] = true;
    try {
      do {
        this.#txAgain[pair] = false;
        if (this.#transmitLoop(pair, queue, channel) === 'blocked') return;
      } while (this.#txAgain[pair]);
    } finally {
      this.#txBusy[pair] = false;
    }
  }

  #transmitLoop(pair: number, queue: DeviceQueue, channel: number): 'blocked' | 'idle' {
    do {
      queue.disableNotifications();
      for (;;) {
        if (this.#stopped) return 'blocked';
        const chain = this.#txPending[pair] ?? queue.pop();
        this.#txPending[pair] = undefined;
        if (!chain) break;
        const result = this.#transmit(pair, channel, chain);
        if (result === 'again') {
          // Not taken: keep the chain and offer it again when the backend drains.
          this.#txPending[pair] = chain;
          this.#txBlocked[channel] = true;
          this.#publishTransmit(pair, queue);
          return 'blocked';
        }
        queue.addUsed(chain, 0);
        if (result === 'congested') {
          this.#txBlocked[channel] = true;
          this.#publishTransmit(pair, queue);
          return 'blocked';
        }
      }
      this.#publishTransmit(pair, queue);
    } while (queue.enableNotifications());
    return 'idle';
  }

  #publishTransmit(pair: number, queue: DeviceQueue): void {
    if (queue.publishUsed()) this.#signalUsed(2 * pair + 1);
  }

  /** Checks and sends one transmit chain (§5.1.6.2). The device writes nothing into it. */
  #transmit(pair: number, channel: number, chain: DescriptorChain): SendResult {
    const stats = this.#stats;
    const headerSize = this.#headerSize;
    if (chain.readableLength < headerSize) {
      stats.txErrors++;
      this.#violation(
        'REQUEST_MALFORMED',
        `transmit buffer of ${chain.readableLength} bytes is shorter than the ${headerSize}-byte virtio_net_hdr`,
        2 * pair + 1,
      );
      return 'dropped';
    }
    const frameLength = chain.readableLength - headerSize;
    const reader = chain.reader();
    const header = readNetHeader(reader.readBytes(headerSize));
    const problem = checkTransmitHeader(header, this.#features, frameLength);
    if (problem) {
      stats.txErrors++;
      this.#violation('NET_TX_HEADER_INVALID', problem, 2 * pair + 1);
      return 'dropped';
    }
    const limit = header.gsoType === NET_HDR_GSO_NONE ? this.#mtuLimit : MAX_FRAME_SIZE;
    if (frameLength < ETH_HLEN || frameLength > limit) {
      stats.txDroppedSize++;
      return 'dropped';
    }
    if (this.#activePairs > 1 && this.#backend.channels === 1) this.#rememberFlow(pair, chain);
    // Zero-copy: the backend reads guest memory directly during the call.
    const pieces = reader.views(frameLength);
    if (this.#backend.vnetHeader) {
      // Forward the offload request in the 12-byte layout the backend expects; flags the
      // driver must not set on transmit (DATA_VALID, RSC_INFO) are not passed on.
      header.flags &= NET_HDR_F_NEEDS_CSUM;
      header.numBuffers = 0;
      writeNetHeader(header, this.#txHeader, 0, NET_HDR_SIZE);
      pieces.unshift(this.#txHeader);
    }
    const result = this.#backend.send(channel, pieces);
    if (result === 'dropped') stats.txDroppedLink++;
    else if (result !== 'again') {
      stats.txFrames++;
      stats.txBytes += frameLength;
    }
    return result;
  }

  // ---------------------------------------------------------------- control

  #processControl(): void {
    const queue = this.#queues[this.#controlIndex];
    if (!queue) return;
    do {
      queue.disableNotifications();
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        if (this.#stopped) return;
        queue.addUsed(chain, this.#executeChain(chain));
      }
      if (queue.publishUsed()) this.#signalUsed(this.#controlIndex);
    } while (queue.enableNotifications());
  }

  /** Executes one control command; returns the bytes written (the ack, or 0 if there is no room). */
  #executeChain(chain: DescriptorChain): number {
    const index = this.#controlIndex;
    if (chain.writableLength < 1) {
      this.#stats.ctrlUnanswerable++;
      this.#violation('REQUEST_MALFORMED', 'control command has no writable ack byte', index);
      return 0;
    }
    let ack: number;
    if (chain.readableLength > MAX_CONTROL_BYTES) {
      ack = this.#reject(
        'NET_CTRL_INVALID',
        `control command of ${chain.readableLength} bytes is larger than any valid command`,
      );
    } else {
      ack = this.#execute(chain.reader().readBytes(chain.readableLength));
    }
    chain.writer().writeU8(ack);
    return 1;
  }

  #execute(bytes: Uint8Array): number {
    const command = parseControlCommand(bytes);
    if (!command) {
      return this.#reject(
        'REQUEST_MALFORMED',
        `control command of ${bytes.length} bytes has no class and command`,
      );
    }
    const { cls, command: cmd, data } = command;
    const name = `control command class ${cls} command ${cmd}`;
    const needs = (feature: number): boolean => this.#has(feature);
    const unsupported = () =>
      this.#reject('NET_CTRL_UNSUPPORTED', `${name} is unknown or its feature was not negotiated`);
    const wrongLength = (expected: number) =>
      this.#reject(
        'NET_CTRL_INVALID',
        `${name} carries ${data.length} data bytes, expected ${expected}`,
      );
    switch (cls) {
      case NetCtrl.RX: {
        const mode = (
          [
            [NetCtrl.RX_PROMISC, NetFeature.CTRL_RX, 'promisc'],
            [NetCtrl.RX_ALLMULTI, NetFeature.CTRL_RX, 'allmulti'],
            [NetCtrl.RX_ALLUNI, NetFeature.CTRL_RX_EXTRA, 'alluni'],
            [NetCtrl.RX_NOMULTI, NetFeature.CTRL_RX_EXTRA, 'nomulti'],
            [NetCtrl.RX_NOUNI, NetFeature.CTRL_RX_EXTRA, 'nouni'],
            [NetCtrl.RX_NOBCAST, NetFeature.CTRL_RX_EXTRA, 'nobcast'],
          ] as const
        ).find(([c]) => c === cmd);
        if (!mode || !needs(mode[1])) return unsupported();
        if (data.length !== 1) return wrongLength(1);
        this.#filter[mode[2]] = data[0] !== 0;
        return this.#ok();
      }
      case NetCtrl.MAC: {
        if (cmd === NetCtrl.MAC_TABLE_SET && needs(NetFeature.CTRL_RX)) {
          const tables = parseMacTables(data);
          if (typeof tables === 'string') return this.#reject('NET_CTRL_INVALID', tables);
          this.#filter.setTables(tables.unicast, tables.multicast);
          return this.#ok();
        }
        if (cmd === NetCtrl.MAC_ADDR_SET && needs(NetFeature.CTRL_MAC_ADDR)) {
          if (data.length !== ETH_ALEN) return wrongLength(ETH_ALEN);
          this.#filter.mac = data.slice();
          this.#control.setMac(data.slice());
          return this.#ok();
        }
        return unsupported();
      }
      case NetCtrl.VLAN: {
        if ((cmd !== NetCtrl.VLAN_ADD && cmd !== NetCtrl.VLAN_DEL) || !needs(NetFeature.CTRL_VLAN))
          return unsupported();
        if (data.length !== 2) return wrongLength(2);
        const id = data[0]! | (data[1]! << 8);
        if (id >= VLAN_ID_COUNT) {
          return this.#reject('NET_CTRL_INVALID', `VLAN ID ${id} is not below ${VLAN_ID_COUNT}`);
        }
        this.#filter.setVlan(id, cmd === NetCtrl.VLAN_ADD);
        return this.#ok();
      }
      case NetCtrl.ANNOUNCE: {
        if (cmd !== NetCtrl.ANNOUNCE_ACK || !needs(NetFeature.GUEST_ANNOUNCE)) return unsupported();
        if (data.length !== 0) return wrongLength(0);
        this.#control.ackAnnounce();
        return this.#ok();
      }
      case NetCtrl.MQ: {
        if (cmd !== NetCtrl.MQ_VQ_PAIRS_SET || !needs(NetFeature.MQ)) return unsupported();
        if (data.length !== 2) return wrongLength(2);
        const pairs = data[0]! | (data[1]! << 8);
        if (pairs < 1 || pairs > this.#usablePairs) {
          return this.#reject(
            'NET_CTRL_INVALID',
            `driver asked for ${pairs} queue pairs, max_virtqueue_pairs is ${this.#usablePairs}`,
          );
        }
        this.#setPairs(pairs);
        return this.#ok();
      }
      default:
        return unsupported();
    }
  }

  /** §5.1.6.5.5: from now on receive only on the first `pairs` queues. */
  #setPairs(pairs: number): void {
    this.#activePairs = pairs;
    if (this.#backend.channels > 1) this.#backend.setActiveChannels(pairs);
    // A frame held for a queue that is no longer in use is steered again.
    this.pumpReceive();
  }

  #ok(): number {
    this.#stats.ctrlOk++;
    return NET_OK;
  }

  #reject(code: string, message: string): number {
    this.#stats.ctrlErr++;
    this.#violation(code, message, this.#controlIndex);
    return NET_ERR;
  }

  #violation(code: string, message: string, queue: number): void {
    this.#report({ code, message, queue, needsReset: false });
  }

  #has(feature: number): boolean {
    return (this.#features & featureBit(feature)) !== 0n;
  }
}
