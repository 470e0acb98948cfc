/**
 * The virtio-net device (virtio 1.2 §5.1): device type 1, queues rx0, tx0, ..., rxN-1, txN-1 and
 * the control queue last, the configuration space of §5.1.4, and the features it offers, which
 * depend on what the backend can carry (offloads need a backend that passes `virtio_net_hdr`).
 */

import { createHash } from 'node:crypto';
import {
  type ActivationContext,
  ConfigSpace,
  DeviceType,
  Feature,
  featureBit,
  type QueueSpec,
  type VirtioDevice,
} from '@virtkit/core';
import { type GuestOffloads, type NetBackend, NO_OFFLOADS } from './backends/backend.js';
import {
  ETH_ALEN,
  NET_DUPLEX_UNKNOWN,
  NET_FEATURE_NAMES,
  NET_FEATURE_REQUIREMENTS,
  NET_MTU_MAX,
  NET_MTU_MIN,
  NET_S_ANNOUNCE,
  NET_S_LINK_UP,
  NET_SPEED_UNKNOWN,
  NetConfig,
  NetFeature,
} from './constants.js';
import { NetError } from './errors.js';
import { RxFilter, type RxFilterState } from './filter.js';
import { createNetStats, NetHandler, type NetStats } from './handler.js';
import { formatMac, parseMac } from './requests.js';

/** Largest number of queue pairs a device may be created with (the CLI's `queues` bound). */
export const MAX_QUEUE_PAIRS = 8;
/** Default ring size of every queue. */
export const DEFAULT_QUEUE_SIZE = 256;
/** Default MTU. */
export const DEFAULT_MTU = 1500;

/** Options of {@link NetDevice}. */
export interface NetDeviceOptions {
  /** Where frames go and come from. The device closes it in {@link NetDevice.close}. */
  readonly backend: NetBackend;
  /**
   * MAC address (`aa:bb:cc:dd:ee:ff` or six bytes). Default: {@link deriveMac} of the backend's
   * description, so the same backend gives the same address on every start.
   */
  readonly mac?: string | Uint8Array;
  /** Queue pairs offered (`max_virtqueue_pairs`, 1..8, default 1). More than 1 offers MQ. */
  readonly queuePairs?: number;
  /** MTU offered in the config space (68..65535, default 1500). */
  readonly mtu?: number;
  /** Maximum size of every queue (power of two, default 256). */
  readonly queueSize?: number;
  /** Diagnostic messages (default: none). */
  readonly log?: (message: string) => void;
}

/**
 * A deterministic, locally administered unicast MAC address from `seed`: the first six bytes of
 * SHA-256("virtkit-net:" + seed), with the multicast bit cleared and the locally-administered
 * bit set (IEEE 802 §9.2). The same backend gives the same address across restarts (DHCP leases
 * survive), and different backends almost surely differ.
 */
export function deriveMac(seed: string): Uint8Array {
  const digest = createHash('sha256').update(`virtkit-net:${seed}`).digest();
  const mac = Uint8Array.from(digest.subarray(0, ETH_ALEN));
  mac[0] = (mac[0]! & 0xfc) | 0x02;
  return mac;
}

const RING_FEATURES =
  featureBit(Feature.RING_INDIRECT_DESC) |
  featureBit(Feature.RING_EVENT_IDX) |
  featureBit(Feature.RING_PACKED);

/** Offloads a backend with `virtio_net_hdr` pass-through supports in both directions. */
const OFFLOAD_FEATURES = [
  NetFeature.CSUM,
  NetFeature.GUEST_CSUM,
  NetFeature.HOST_TSO4,
  NetFeature.HOST_TSO6,
  NetFeature.HOST_ECN,
  NetFeature.GUEST_TSO4,
  NetFeature.GUEST_TSO6,
  NetFeature.GUEST_ECN,
].reduce((mask, bit) => mask | featureBit(bit), 0n);

const BASE_FEATURES = [
  NetFeature.MAC,
  NetFeature.STATUS,
  NetFeature.MTU,
  NetFeature.MRG_RXBUF,
  NetFeature.CTRL_VQ,
  NetFeature.CTRL_RX,
  NetFeature.CTRL_RX_EXTRA,
  NetFeature.CTRL_VLAN,
  NetFeature.GUEST_ANNOUNCE,
  NetFeature.CTRL_MAC_ADDR,
].reduce((mask, bit) => mask | featureBit(bit), 0n);

function has(features: bigint, bit: number): boolean {
  return (features & featureBit(bit)) !== 0n;
}

/**
 * A virtio-net device over a {@link NetBackend}.
 *
 * @example
 * ```ts
 * const [backend, wire] = createMemoryPair();
 * const device = new NetDevice({ backend, mac: '52:54:00:12:34:56' });
 * const driver = await TestDriver.create(device); // rx0=0, tx0=1, ctrl=2
 * wire.inject(frame);                             // arrives in the guest's receive buffers
 * ```
 */
export class NetDevice implements VirtioDevice {
  readonly deviceType = DeviceType.NET;
  readonly features: bigint;
  readonly queues: readonly QueueSpec[];
  readonly config: ConfigSpace;
  readonly backend: NetBackend;
  /** Counters of frames moved and dropped, control commands answered. */
  readonly stats: NetStats = createNetStats();
  /** `max_virtqueue_pairs`. */
  readonly maxPairs: number;
  readonly mtu: number;
  /** The MAC address the device was created with (config `mac` returns to it on reset). */
  readonly mac: Uint8Array;
  readonly #filter: RxFilter;
  readonly #log: (message: string) => void;
  #handler: NetHandler | undefined;
  #negotiated = 0n;
  #linkUp: boolean;
  #announcePending = false;
  #closed = false;

  constructor(options: NetDeviceOptions) {
    const pairs = options.queuePairs ?? 1;
    if (!Number.isInteger(pairs) || pairs < 1 || pairs > MAX_QUEUE_PAIRS) {
      throw new NetError(
        'NET_INVALID_OPTIONS',
        `queue pairs must be an integer from 1 to ${MAX_QUEUE_PAIRS}, got ${pairs}`,
      );
    }
    const mtu = options.mtu ?? DEFAULT_MTU;
    if (!Number.isInteger(mtu) || mtu < NET_MTU_MIN || mtu > NET_MTU_MAX) {
      throw new NetError(
        'NET_INVALID_OPTIONS',
        `MTU must be an integer from ${NET_MTU_MIN} to ${NET_MTU_MAX}, got ${mtu}`,
      );
    }
    const backend = options.backend;
    if (backend.channels !== 1 && backend.channels !== pairs) {
      throw new NetError(
        'NET_INVALID_OPTIONS',
        `backend ${backend.description} has ${backend.channels} channels; a device with ${pairs} queue pairs needs 1 or ${pairs}`,
      );
    }
    const mac =
      typeof options.mac === 'string'
        ? parseMac(options.mac)
        : (options.mac?.slice() ?? deriveMac(backend.description));
    if (!mac || mac.length !== ETH_ALEN) {
      throw new NetError(
        'NET_INVALID_OPTIONS',
        `MAC address '${String(options.mac)}' is not six bytes like aa:bb:cc:dd:ee:ff`,
      );
    }
    if (mac[0]! & 1) {
      throw new NetError(
        'NET_INVALID_OPTIONS',
        `MAC address ${formatMac(mac)} is a multicast address`,
      );
    }
    this.backend = backend;
    this.maxPairs = pairs;
    this.mtu = mtu;
    this.mac = mac;
    this.#log = options.log ?? (() => {});
    this.features =
      RING_FEATURES |
      BASE_FEATURES |
      (pairs > 1 ? featureBit(NetFeature.MQ) : 0n) |
      // Honest offer: offloads only when the backend carries the header that describes them.
      (backend.vnetHeader ? OFFLOAD_FEATURES : 0n);
    const queueSize = options.queueSize ?? DEFAULT_QUEUE_SIZE;
    this.queues = Array.from({ length: 2 * pairs + 1 }, () => ({ maxSize: queueSize }));
    this.config = new ConfigSpace(NetConfig.SIZE);
    this.config.setBytes(NetConfig.MAC, mac);
    this.config.setU16(NetConfig.MAX_VIRTQUEUE_PAIRS, pairs);
    this.config.setU16(NetConfig.MTU, mtu);
    this.config.setU32(NetConfig.SPEED, NET_SPEED_UNKNOWN);
    this.config.setU8(NetConfig.DUPLEX, NET_DUPLEX_UNKNOWN);
    this.#linkUp = backend.linkUp;
    this.#writeStatus();
    this.#filter = new RxFilter(mac);
    backend.attach({
      readable: (channel) => this.#handler?.onReadable(channel),
      writable: (channel) => this.#handler?.onWritable(channel),
      link: (up) => this.setLink(up),
    });
  }

  /** Link state as the driver sees it (VIRTIO_NET_S_LINK_UP). */
  get linkUp(): boolean {
    return this.#linkUp;
  }

  /** The receive filter's state (RX modes, tables, VLANs) as the driver set it. */
  get filter(): RxFilterState {
    return this.#filter.state();
  }

  /** Queue pairs in use (1 until the driver sends VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET). */
  get activePairs(): number {
    return this.#handler?.activePairs ?? 1;
  }

  /** The MAC address in the config space now (changed by VIRTIO_NET_CTRL_MAC_ADDR_SET). */
  get currentMac(): string {
    return formatMac(this.config.snapshot().subarray(NetConfig.MAC, NetConfig.MAC + ETH_ALEN));
  }

  /**
   * §5.1.3.1 feature dependencies: FEATURES_OK is refused for a set where a feature lacks one it
   * requires (e.g. GUEST_TSO4 without GUEST_CSUM).
   */
  validateFeatures(features: bigint): string | undefined {
    for (const { feature, requires } of NET_FEATURE_REQUIREMENTS) {
      if (has(features, feature) && !requires.some((bit) => has(features, bit))) {
        const names = requires.map((bit) => NET_FEATURE_NAMES.get(bit)).join(' or ');
        return `${NET_FEATURE_NAMES.get(feature)} requires ${names}`;
      }
    }
    return undefined;
  }

  activate(context: ActivationContext): void {
    if (this.#closed) throw new NetError('NET_CLOSED', 'device was closed');
    const features = context.features;
    this.#negotiated = features;
    this.#filter.reset(this.mac);
    this.#filter.vlanFiltering = has(features, NetFeature.CTRL_VLAN);
    const offloads: GuestOffloads = {
      csum: has(features, NetFeature.GUEST_CSUM),
      tso4: has(features, NetFeature.GUEST_TSO4),
      tso6: has(features, NetFeature.GUEST_TSO6),
      ecn: has(features, NetFeature.GUEST_ECN),
    };
    this.backend.setOffloads(offloads);
    this.backend.setActiveChannels(1);
    const handler = new NetHandler({
      features,
      queues: context.queues,
      maxPairs: this.maxPairs,
      mtu: this.mtu,
      backend: this.backend,
      filter: this.#filter,
      stats: this.stats,
      control: {
        setMac: (mac) => this.config.setBytes(NetConfig.MAC, mac),
        ackAnnounce: () => {
          this.#announcePending = false;
          this.#writeStatus();
        },
      },
      signalUsed: (index) => context.signalUsed(index),
      reportViolation: context.reportViolation,
    });
    this.#handler = handler;
    handler.start();
  }

  queueNotify(queueIndex: number): void {
    this.#handler?.notify(queueIndex);
  }

  /**
   * Back to the state after power-on: queues dropped (frames held for the guest are discarded),
   * filters promiscuous and empty, one queue pair, the original MAC, no announcement pending,
   * and no receive offloads asked of the backend. The backend itself stays open.
   */
  reset(): void {
    this.#handler?.stop();
    this.#handler = undefined;
    this.#negotiated = 0n;
    this.#announcePending = false;
    this.#filter.reset(this.mac);
    this.config.setBytes(NetConfig.MAC, this.mac);
    this.#writeStatus();
    if (!this.#closed) {
      this.backend.setOffloads(NO_OFFLOADS);
      this.backend.setActiveChannels(1);
    }
  }

  /**
   * Asks the driver to announce itself on the network (after a migration): sets
   * VIRTIO_NET_S_ANNOUNCE and raises a configuration change (§5.1.6.5.4). Returns false if the
   * driver did not negotiate GUEST_ANNOUNCE or the device is not active.
   */
  announce(): boolean {
    if (!this.#handler || !has(this.#negotiated, NetFeature.GUEST_ANNOUNCE)) return false;
    this.#announcePending = true;
    this.#writeStatus();
    return true;
  }

  /** Sets the link state the driver sees; a change raises a configuration change. */
  setLink(up: boolean): void {
    if (this.#linkUp === up) return;
    this.#linkUp = up;
    this.#log(`${this.backend.description}: link ${up ? 'up' : 'down'}`);
    this.#writeStatus();
  }

  /** Closes the backend. The device cannot be activated afterwards. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#handler?.stop();
    this.#handler = undefined;
    await this.backend.close();
  }

  #writeStatus(): void {
    this.config.setU16(
      NetConfig.STATUS,
      (this.#linkUp ? NET_S_LINK_UP : 0) | (this.#announcePending ? NET_S_ANNOUNCE : 0),
    );
  }
}
