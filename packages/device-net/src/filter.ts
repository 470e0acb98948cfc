/**
 * Receive filtering (§5.1.6.5.1 - §5.1.6.5.3): RX modes, the MAC filter tables and the VLAN
 * filter, as the driver sets them through the control queue. The spec calls all of it
 * best-effort; this implementation filters exactly, the way QEMU's virtio-net does.
 */

import { ETH_ALEN, VLAN_ID_COUNT } from './constants.js';
import { vlanId } from './requests.js';

/** Addresses kept per MAC filter table; beyond this the table "overflows" to accept all. */
export const MAC_TABLE_ENTRIES = 64;

function sameMac(frame: Uint8Array, mac: Uint8Array): boolean {
  for (let i = 0; i < ETH_ALEN; i++) if (frame[i] !== mac[i]) return false;
  return true;
}

/** Plain-data view of the filter state (for diagnostics and tests). */
export interface RxFilterState {
  readonly promisc: boolean;
  readonly allmulti: boolean;
  readonly alluni: boolean;
  readonly nomulti: boolean;
  readonly nouni: boolean;
  readonly nobcast: boolean;
  readonly unicast: number;
  readonly multicast: number;
  readonly vlans: readonly number[];
}

/** The device's receive filter. */
export class RxFilter {
  promisc = true;
  allmulti = false;
  alluni = false;
  nomulti = false;
  nouni = false;
  nobcast = false;
  /** The device's own address (config `mac`, or VIRTIO_NET_CTRL_MAC_ADDR_SET). */
  mac: Uint8Array;
  #unicast: Uint8Array[] = [];
  #multicast: Uint8Array[] = [];
  #unicastOverflow = false;
  #multicastOverflow = false;
  readonly #vlans = new Uint8Array(VLAN_ID_COUNT / 8);
  /** VLAN filtering applies only once CTRL_VLAN was negotiated (QEMU does the same). */
  vlanFiltering = false;

  constructor(mac: Uint8Array) {
    this.mac = mac.slice();
  }

  /**
   * Back to the state after reset: promiscuous (a driver without CTRL_RX cannot ask for anything
   * else, so the device must not filter), tables and VLANs empty (§5.1.6.5.2: "empty MAC filtering
   * table on reset").
   */
  reset(mac: Uint8Array): void {
    this.promisc = true;
    this.allmulti = false;
    this.alluni = false;
    this.nomulti = false;
    this.nouni = false;
    this.nobcast = false;
    this.mac = mac.slice();
    this.setTables([], []);
    this.#vlans.fill(0);
    this.vlanFiltering = false;
  }

  /** Replaces the MAC filter tables (VIRTIO_NET_CTRL_MAC_TABLE_SET). */
  setTables(unicast: readonly Uint8Array[], multicast: readonly Uint8Array[]): void {
    this.#unicastOverflow = unicast.length > MAC_TABLE_ENTRIES;
    this.#multicastOverflow = multicast.length > MAC_TABLE_ENTRIES;
    this.#unicast = this.#unicastOverflow ? [] : unicast.map((m) => m.slice());
    this.#multicast = this.#multicastOverflow ? [] : multicast.map((m) => m.slice());
  }

  /** Adds or removes a VLAN ID (0..4095) from the filter. */
  setVlan(id: number, member: boolean): void {
    const bit = 1 << (id & 7);
    if (member) this.#vlans[id >> 3]! |= bit;
    else this.#vlans[id >> 3]! &= ~bit;
  }

  /** True if frames tagged with VLAN `id` pass. */
  hasVlan(id: number): boolean {
    return (this.#vlans[id >> 3]! & (1 << (id & 7))) !== 0;
  }

  /** True if the device should pass `frame` (an Ethernet frame, no virtio header) to the driver. */
  accepts(frame: Uint8Array): boolean {
    if (this.promisc) return true;
    if (this.vlanFiltering) {
      const id = vlanId(frame);
      if (id !== undefined && !this.hasVlan(id)) return false;
    }
    if (frame[0]! & 1) {
      if (
        frame[0] === 0xff &&
        frame[1] === 0xff &&
        frame[2] === 0xff &&
        frame[3] === 0xff &&
        frame[4] === 0xff &&
        frame[5] === 0xff
      ) {
        return !this.nobcast;
      }
      if (this.nomulti) return false;
      if (this.allmulti || this.#multicastOverflow) return true;
      return this.#multicast.some((mac) => sameMac(frame, mac));
    }
    if (this.nouni) return false;
    if (this.alluni || this.#unicastOverflow) return true;
    if (sameMac(frame, this.mac)) return true;
    return this.#unicast.some((mac) => sameMac(frame, mac));
  }

  /** The state as plain data. */
  state(): RxFilterState {
    const vlans: number[] = [];
    for (let id = 0; id < VLAN_ID_COUNT; id++) if (this.hasVlan(id)) vlans.push(id);
    return {
      promisc: this.promisc,
      allmulti: this.allmulti,
      alluni: this.alluni,
      nomulti: this.nomulti,
      nouni: this.nouni,
      nobcast: this.nobcast,
      unicast: this.#unicastOverflow ? Number.POSITIVE_INFINITY : this.#unicast.length,
      multicast: this.#multicastOverflow ? Number.POSITIVE_INFINITY : this.#multicast.length,
      vlans,
    };
  }
}
