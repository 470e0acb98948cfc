/**
 * The device side of a packed virtqueue (virtio 1.2 §2.8): one ring of 16-byte descriptors that
 * the driver marks available and the device overwrites with used descriptors, plus two 4-byte
 * event suppression structures.
 *
 * Everything the guest wrote is hostile input: chains are validated completely before a
 * {@link DescriptorChain} is handed out, every field is read once (guest memory may be a
 * SharedArrayBuffer another thread writes), and a violation is reported to the queue's
 * {@link ViolationSink} and stops the queue instead of throwing.
 */

import {
  MAX_QUEUE_SIZE,
  PACKED_ALIGN_DESC,
  PACKED_ALIGN_EVENT,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
} from '../constants.js';
import {
  formatAddress,
  QueueConfigError,
  type ViolationCode,
  type ViolationSink,
  VirtkitError,
} from '../errors.js';
import { type GuestMemory, type GuestRegion, guestAddressFromParts } from '../memory.js';
import { DescriptorChain, type Segment } from './chain.js';
import {
  formatAddressParts,
  regionUint16Array,
  regionUint32Array,
  vringNeedEvent,
} from './ring-util.js';
import type { DeviceQueue, DeviceQueueOptions, QueuePosition, QueueSetup } from './types.js';

/**
 * Largest indirect table the device accepts, in entries (512 KiB). §2.8.5 caps a list at the queue
 * size unless the device states its own limit, but Linux fills tables up to a device's segment
 * limit (virtio-blk `seg_max`) even when that exceeds the queue size, so only this bound is kept.
 */
export const PACKED_MAX_INDIRECT_ENTRIES = 32768;

/** Bytes of one event suppression structure (§2.8.10.1). */
const EVENT_SUPPRESSION_SIZE = 4;
/** A chain's total length must stay below 2^32 (split ring §2.7.5; used lengths are le32). */
const MAX_CHAIN_BYTES = 0x1_0000_0000;
/** Wrap counter bit of an event suppression offset/wrap field (§2.8.14). */
const EVENT_WRAP_SHIFT = 15;

// Shared by every chain without readable or without writable segments: one array fewer per pop.
const NO_SEGMENTS: readonly Segment[] = Object.freeze([]);

/**
 * One packed ring descriptor as the driver wrote it (§2.8.13), copied when its chain was popped so
 * that the chain can be taken again later with {@link PackedDeviceQueue.resubmit}. `flags` are the
 * descriptor's flags (NEXT, WRITE, INDIRECT; AVAIL and USED are ignored), `len` an le32, `id` an
 * le16 (only the last descriptor's counts, as in the ring).
 */
export interface PackedDescriptor {
  readonly addr: bigint;
  readonly len: number;
  readonly id: number;
  readonly flags: number;
}

/**
 * Device side of a packed virtqueue (§2.8).
 *
 * Ring slot `n` occupies 16 bytes at `descAddr + 16 n`: `le64 addr`, `le32 len`, `le16 id`,
 * `le16 flags`. It is viewed here as four u32 (`addr` low/high, `len`, `id | flags << 16`) and as
 * eight u16 (`id` at 6, `flags` at 7), so flags can be read and written with `Atomics`.
 *
 * @example
 * ```ts
 * const queue = new PackedDeviceQueue(setup, { memory, onViolation: (v) => counter.record(v) });
 * do {
 *   queue.disableNotifications();
 *   for (let chain = queue.pop(); chain; chain = queue.pop()) queue.addUsed(chain, handle(chain));
 *   if (queue.publishUsed()) signalUsed(queue.index);
 * } while (queue.enableNotifications());
 * ```
 */
export class PackedDeviceQueue implements DeviceQueue {
  /** Queue index on its device. */
  readonly index: number;
  /** Queue size (ring entries). */
  readonly size: number;
  /** Ring layout. */
  readonly layout = 'packed' as const;

  readonly #memory: GuestMemory;
  readonly #onViolation: ViolationSink;
  readonly #eventIdx: boolean;
  readonly #indirect: boolean;
  readonly #desc16: Uint16Array;
  readonly #desc32: Uint32Array;
  /** Driver event suppression: written by the driver, read here (used buffer notifications). */
  readonly #driverEvent: Uint32Array;
  /** Device event suppression: written here, read by the driver (available buffer notifications). */
  readonly #deviceEvent: Uint32Array;

  #nextAvail: number;
  /** Expected AVAIL bit (0 or 1) of the descriptor at {@link #nextAvail}. */
  #availWrap: number;
  #nextUsed: number;
  /** Device ring wrap counter (0 or 1) for the used descriptor at {@link #nextUsed}. */
  #usedWrap: number;
  /** Ring slots popped and not yet overwritten by used descriptors; at most `size`. */
  #outstanding: number;
  #inFlight = 0;
  /** Per buffer id: ring slots of the chain in flight with that id, 0 when the id is free. */
  readonly #idSlots: Uint16Array;
  /** Per buffer id: writable bytes of the chain in flight, the cap on its used length. */
  readonly #idWritable: Uint32Array;
  /** Per buffer id: the chain in flight, so addUsed can tell it from another queue's. */
  readonly #idChain: (DescriptorChain | undefined)[];

  /** u16 index of the flags of the first used descriptor not yet published, or -1. */
  #batchFlagsIndex = -1;
  #batchFlags = 0;
  /** Ring slots the used position advanced since the last publication. */
  #batchSlots = 0;

  #broken = false;
  #detached = false;
  /**
   * Ring slots between the used and available positions the queue was created at: taken by an
   * earlier instance of the device, not yet claimed back by {@link resubmit}.
   */
  #unclaimed = 0;
  /** True while {@link resubmit} validates a saved chain (violations are reported, not fatal). */
  #saved = false;

  // Scratch state of the chain being walked by pop(); fields rather than locals so the segment
  // and indirect-table helpers need no closures or result objects.
  #readable: Segment[] | null = null;
  #writable: Segment[] | null = null;
  #readableLength = 0;
  #writableLength = 0;
  #sawWritable = false;

  /**
   * Checks the setup and caches typed views of the ring and both event suppression structures.
   * Throws {@link QueueConfigError} if the size is not 1..32768, a part is misaligned (§2.8.10.1),
   * or a part is not inside a single guest memory region.
   */
  constructor(setup: QueueSetup, options: DeviceQueueOptions) {
    const { index, size } = setup;
    if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE) {
      throw new QueueConfigError(
        `packed queue size ${size} is not between 1 and ${MAX_QUEUE_SIZE}`,
      );
    }
    this.index = index;
    this.size = size;
    this.#memory = options.memory;
    this.#onViolation = options.onViolation;
    this.#eventIdx = setup.eventIdx;
    this.#indirect = setup.indirect;

    const ringBytes = 16 * size;
    const descRegion = this.#area('descriptor ring', setup.descAddr, ringBytes, PACKED_ALIGN_DESC);
    const driverRegion = this.#area(
      'driver event suppression structure',
      setup.driverAddr,
      EVENT_SUPPRESSION_SIZE,
      PACKED_ALIGN_EVENT,
    );
    const deviceRegion = this.#area(
      'device event suppression structure',
      setup.deviceAddr,
      EVENT_SUPPRESSION_SIZE,
      PACKED_ALIGN_EVENT,
    );
    const desc16 = regionUint16Array(descRegion, setup.descAddr, ringBytes);
    const desc32 = regionUint32Array(descRegion, setup.descAddr, ringBytes);
    const driverEvent = regionUint32Array(driverRegion, setup.driverAddr, EVENT_SUPPRESSION_SIZE);
    const deviceEvent = regionUint32Array(deviceRegion, setup.deviceAddr, EVENT_SUPPRESSION_SIZE);
    if (!desc16 || !desc32 || !driverEvent || !deviceEvent) {
      // Only possible when a region's guest address and buffer offset disagree modulo 4.
      throw new QueueConfigError(
        'packed ring parts are not 4-byte aligned in the buffer backing their guest memory region',
      );
    }
    this.#desc16 = desc16;
    this.#desc32 = desc32;
    this.#driverEvent = driverEvent;
    this.#deviceEvent = deviceEvent;
    this.#idSlots = new Uint16Array(size);
    this.#idWritable = new Uint32Array(size);
    this.#idChain = new Array<DescriptorChain | undefined>(size).fill(undefined);

    const position = options.position;
    if (position) {
      const { nextAvail, nextUsed } = position;
      for (const [name, value] of [
        ['nextAvail', nextAvail],
        ['nextUsed', nextUsed],
      ] as const) {
        if (!Number.isInteger(value) || value < 0 || value >= size) {
          throw new QueueConfigError(
            `packed queue position ${name} ${value} is not a slot of a ${size}-entry ring`,
          );
        }
      }
      this.#nextAvail = nextAvail;
      this.#nextUsed = nextUsed;
      this.#availWrap = position.availWrap === false ? 0 : 1;
      this.#usedWrap = position.usedWrap === false ? 0 : 1;
      // The used position trails the available one by the slots still in flight (at most a lap).
      const outstanding =
        this.#availWrap === this.#usedWrap ? nextAvail - nextUsed : nextAvail + size - nextUsed;
      if (outstanding < 0 || outstanding > size) {
        throw new QueueConfigError(
          `packed queue position has the used slot ${nextUsed} ahead of the available slot ${nextAvail}`,
        );
      }
      this.#outstanding = outstanding;
      this.#unclaimed = outstanding;
    } else {
      // Both wrap counters start at 1 (§2.8.1).
      this.#nextAvail = 0;
      this.#nextUsed = 0;
      this.#availWrap = 1;
      this.#usedWrap = 1;
      this.#outstanding = 0;
    }
  }

  #area(name: string, address: number, length: number, align: number): GuestRegion {
    if (!Number.isSafeInteger(address) || address % align !== 0) {
      throw new QueueConfigError(
        `packed ${name} at ${formatAddress(address)} is not ${align}-byte aligned`,
      );
    }
    const region = this.#memory.findRegion(address, length);
    if (!region) {
      throw new QueueConfigError(
        `packed ${name} at ${formatAddress(address)} (${length} bytes) is not inside one guest memory region`,
      );
    }
    return region;
  }

  /** True after a protocol violation: the queue returns no more chains until it is recreated. */
  get broken(): boolean {
    return this.#broken;
  }

  /** Chains popped and not yet returned with {@link addUsed}. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * The next available chain, validated in full, or `null` when the driver has made nothing new
   * available, the queue is broken or detached. Zero-length descriptors carry no data and are left
   * out of the chain's segments. An indirect table's entries are all part of the buffer (§2.8.7:
   * only WRITE is meaningful inside a table; NEXT is ignored there, as Linux never sets it).
   */
  pop(): DescriptorChain | null {
    if (this.#broken || this.#detached) return null;
    const desc16 = this.#desc16;
    const head = this.#nextAvail;
    let slot = head;
    let wrap = this.#availWrap;
    // Acquire: the driver writes the head's flags last (§2.8.6, §2.8.21), so the rest of the chain
    // is visible once these flags are.
    let flags = Atomics.load(desc16, (slot << 3) + 7);
    if (((flags >>> 7) & 1) !== wrap || flags >>> 15 === wrap) return null;

    const desc32 = this.#desc32;
    const size = this.size;
    this.#beginChain();
    let slots = 1;
    for (;;) {
      const base = slot << 2;
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        if (!this.#indirect) {
          return this.#violation(
            'INDIRECT_NOT_NEGOTIATED',
            `descriptor in ring slot ${slot} is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated`,
          );
        }
        if ((flags & VIRTQ_DESC_F_NEXT) !== 0 || slots > 1) {
          return this.#violation(
            'INDIRECT_WITH_NEXT',
            `indirect descriptor in ring slot ${slot} is part of a chain linked by NEXT`,
          );
        }
        if (!this.#walkIndirect(desc32[base]!, desc32[base + 1]!, desc32[base + 2]!, slot)) {
          return null;
        }
      } else if (
        !this.#takeSegment(
          desc32[base]!,
          desc32[base + 1]!,
          desc32[base + 2]!,
          (flags & VIRTQ_DESC_F_WRITE) !== 0,
          slot,
          -1,
        )
      ) {
        return null;
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      if (slots === size) {
        return this.#violation(
          'CHAIN_TOO_LONG',
          `descriptor chain starting at ring slot ${head} is longer than queue size ${size}`,
        );
      }
      slot++;
      if (slot === size) {
        slot = 0;
        wrap ^= 1;
      }
      // Every descriptor of a list carries correct AVAIL/USED bits (§2.8.6); one that does not
      // means the chain runs past what the driver made available.
      flags = desc16[(slot << 3) + 7]!;
      if (((flags >>> 7) & 1) !== wrap || flags >>> 15 === wrap) {
        return this.#violation(
          'CHAIN_TOO_LONG',
          `descriptor chain starting at ring slot ${head} continues into slot ${slot}, which the driver has not made available`,
        );
      }
      slots++;
    }

    // The buffer id is in the last descriptor of the list (§2.8.6).
    const id = desc16[(slot << 3) + 6]!;
    if (slots > size - this.#outstanding) {
      return this.#violation(
        'AVAIL_INDEX_JUMP',
        `driver made ring slots available again before the device returned them (${this.#outstanding} of ${size} slots still in flight, chain at slot ${head} needs ${slots})`,
      );
    }
    if (id >= size) {
      return this.#violation(
        'BUFFER_ID_OUT_OF_RANGE',
        `buffer id ${id} in ring slot ${slot} is not below queue size ${size}`,
      );
    }
    if (this.#idSlots[id] !== 0) {
      return this.#violation(
        'BUFFER_ID_IN_USE',
        `buffer id ${id} in ring slot ${slot} is already in flight: the driver reused it before the device returned it`,
      );
    }

    slot++;
    if (slot === size) {
      slot = 0;
      wrap ^= 1;
    }
    this.#nextAvail = slot;
    this.#availWrap = wrap;
    this.#outstanding += slots;
    const chain = this.#issue(id, slots);
    this.#readable = null;
    this.#writable = null;
    return chain;
  }

  /** Clears the segments and lengths of the chain walk about to start. */
  #beginChain(): void {
    this.#readable = null;
    this.#writable = null;
    this.#readableLength = 0;
    this.#writableLength = 0;
    this.#sawWritable = false;
  }

  /** Records buffer `id` as in flight over `slots` ring slots: the chain just walked. */
  #issue(id: number, slots: number): DescriptorChain {
    this.#inFlight++;
    this.#idSlots[id] = slots;
    this.#idWritable[id] = this.#writableLength;
    const chain = new DescriptorChain(
      this.#memory,
      id,
      this.#readable ?? NO_SEGMENTS,
      this.#writable ?? NO_SEGMENTS,
      this.#readableLength,
      this.#writableLength,
      slots,
    );
    this.#idChain[id] = chain;
    return chain;
  }

  /** Validates one buffer element and appends it to the chain being walked. */
  #takeSegment(
    low: number,
    high: number,
    len: number,
    write: boolean,
    slot: number,
    entry: number,
  ): boolean {
    const addr = guestAddressFromParts(low, high);
    if (addr === undefined || !this.#memory.checkRange(addr, len)) {
      return this.#fail(
        'DESCRIPTOR_OUT_OF_MEMORY',
        `${this.#descriptorPlace(slot, entry)} points at ${len} bytes at ${formatAddressParts(low, high)}, outside guest memory`,
      );
    }
    const total = this.#readableLength + this.#writableLength + len;
    if (total >= MAX_CHAIN_BYTES) {
      return this.#fail(
        'CHAIN_TOO_LARGE',
        `descriptor chain reaches ${total} bytes at ${this.#descriptorPlace(slot, entry)}; chains must stay below 2^32 bytes`,
      );
    }
    if (write) {
      this.#sawWritable = true;
      if (len === 0) return true;
      this.#writableLength += len;
      if (this.#writable === null) this.#writable = [{ addr, len }];
      else this.#writable.push({ addr, len });
      return true;
    }
    if (this.#sawWritable) {
      return this.#fail(
        'READABLE_AFTER_WRITABLE',
        `${this.#descriptorPlace(slot, entry)} is device-readable but follows a device-writable descriptor`,
      );
    }
    if (len === 0) return true;
    this.#readableLength += len;
    if (this.#readable === null) this.#readable = [{ addr, len }];
    else this.#readable.push({ addr, len });
    return true;
  }

  /** Validates an indirect table (§2.8.7) and appends all its entries to the chain being walked. */
  #walkIndirect(low: number, high: number, tableLength: number, slot: number): boolean {
    const entries = tableLength / 16;
    if (tableLength === 0 || !Number.isInteger(entries) || entries > PACKED_MAX_INDIRECT_ENTRIES) {
      return this.#fail(
        'INDIRECT_BAD_LENGTH',
        `indirect ${this.#descriptorPlace(slot, -1)} has table length ${tableLength}, not a non-zero multiple of 16 of at most ${PACKED_MAX_INDIRECT_ENTRIES} entries`,
      );
    }
    const tableAddr = guestAddressFromParts(low, high);
    const region =
      tableAddr === undefined ? undefined : this.#memory.findRegion(tableAddr, tableLength);
    if (tableAddr === undefined || region === undefined) {
      return this.#fail(
        'INDIRECT_OUT_OF_MEMORY',
        `indirect table of ${this.#place(slot)} (${tableLength} bytes at ${formatAddressParts(low, high)}) is not inside one guest memory region`,
      );
    }
    const data = region.data;
    let offset = tableAddr - region.guestAddress;
    for (let entry = 0; entry < entries; entry++, offset += 16) {
      const flags = data.getUint16(offset + 14, true);
      // §2.8.19 forbids the driver to set anything but WRITE here; a nested table is refused
      // rather than read as plain data, as QEMU and Linux's vhost do for split rings.
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        return this.#fail(
          'INDIRECT_NESTED',
          `entry ${entry} of the indirect table of ${this.#place(slot)} is itself indirect`,
        );
      }
      if (
        !this.#takeSegment(
          data.getUint32(offset, true),
          data.getUint32(offset + 4, true),
          data.getUint32(offset + 8, true),
          (flags & VIRTQ_DESC_F_WRITE) !== 0,
          slot,
          entry,
        )
      ) {
        return false;
      }
    }
    return true;
  }

  /**
   * Ring slots the queue was created with in flight (between its used and available positions)
   * that {@link resubmit} has not claimed back yet.
   */
  get unclaimedSlots(): number {
    return this.#unclaimed;
  }

  /**
   * Takes again a chain an earlier instance of the device popped from this ring and never
   * returned, from a copy of its ring descriptors saved when it was popped: a back-end restarted
   * after a crash resubmits the requests it had in flight (vhost-user inflight tracking). The
   * ring itself cannot be read again: the device writes used descriptors in completion order, over
   * the slots of chains still in flight.
   *
   * The queue must have been created at a position past the chain: the slots between its used
   * and available positions are the ones taken earlier, and each chain taken back claims its
   * descriptors' count of them ({@link unclaimedSlots}). The copy is as untrusted as the ring and
   * is validated as {@link pop} validates it (guest memory bounds, chain length and NEXT links,
   * indirect rules, buffer id in range and free). A copy that fails is reported to the violation
   * sink with `needsReset: false` and `null` is returned: the queue stays usable, and the slots
   * stay taken (the driver does not get that buffer back). Once returned with {@link addUsed},
   * the chain is an ordinary one.
   *
   * @example
   * ```ts
   * const queue = new PackedDeviceQueue(setup, { memory, onViolation, position: recorded });
   * for (const saved of recoveredChains) {
   *   const chain = queue.resubmit(saved);
   *   if (chain) startRequest(chain);
   * }
   * ```
   */
  resubmit(descriptors: readonly PackedDescriptor[]): DescriptorChain | null {
    if (this.#broken || this.#detached) return null;
    this.#saved = true;
    try {
      return this.#takeSaved(descriptors);
    } finally {
      this.#saved = false;
      this.#readable = null;
      this.#writable = null;
    }
  }

  #takeSaved(descriptors: readonly PackedDescriptor[]): DescriptorChain | null {
    const count = descriptors.length;
    const size = this.size;
    this.#beginChain();
    if (count === 0 || count > size) {
      return this.#violation(
        'CHAIN_TOO_LONG',
        `saved chain of ${count} descriptors is not 1 to queue size ${size} long`,
      );
    }
    if (count > this.#unclaimed) {
      return this.#violation(
        'AVAIL_INDEX_JUMP',
        `saved chain of ${count} descriptors needs more ring slots than the ${this.#unclaimed} still held by chains taken earlier`,
      );
    }
    for (let i = 0; i < count; i++) {
      const descriptor = descriptors[i]!;
      const flags = descriptor.flags & 0xffff;
      const addr = BigInt.asUintN(64, descriptor.addr);
      const low = Number(addr & 0xffff_ffffn);
      const high = Number(addr >> 32n);
      const len = descriptor.len >>> 0;
      const last = i === count - 1;
      if (((flags & VIRTQ_DESC_F_NEXT) === 0) !== last) {
        return this.#violation(
          'CHAIN_TOO_LONG',
          last
            ? `saved descriptor ${i}, the last of its chain, has NEXT set`
            : `saved descriptor ${i} ends its chain (no NEXT) before the chain's ${count} descriptors`,
        );
      }
      if ((flags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        if (!this.#indirect) {
          return this.#violation(
            'INDIRECT_NOT_NEGOTIATED',
            `saved descriptor ${i} is indirect but VIRTIO_F_INDIRECT_DESC was not negotiated`,
          );
        }
        if (count > 1) {
          return this.#violation(
            'INDIRECT_WITH_NEXT',
            `indirect saved descriptor ${i} is part of a chain linked by NEXT`,
          );
        }
        if (!this.#walkIndirect(low, high, len, i)) return null;
      } else if (!this.#takeSegment(low, high, len, (flags & VIRTQ_DESC_F_WRITE) !== 0, i, -1)) {
        return null;
      }
    }
    const id = descriptors[count - 1]!.id & 0xffff;
    if (id >= size) {
      return this.#violation(
        'BUFFER_ID_OUT_OF_RANGE',
        `buffer id ${id} of a saved chain is not below queue size ${size}`,
      );
    }
    if (this.#idSlots[id] !== 0) {
      return this.#violation(
        'BUFFER_ID_IN_USE',
        `buffer id ${id} of a saved chain is already in flight`,
      );
    }
    // Its slots were counted in flight when the queue was created; they are released by addUsed.
    this.#unclaimed -= count;
    return this.#issue(id, count);
  }

  /** True if a chain is available (without consuming or validating it). */
  hasAvailable(): boolean {
    if (this.#broken || this.#detached) return false;
    const flags = Atomics.load(this.#desc16, (this.#nextAvail << 3) + 7);
    const wrap = this.#availWrap;
    return ((flags >>> 7) & 1) === wrap && flags >>> 15 !== wrap;
  }

  /**
   * Returns a popped chain to the driver. `writtenLength` is clamped to the chain's writable
   * bytes. Completions may come in any order; each writes one used descriptor at the device's
   * used slot and advances it by the chain's ring slots (§2.8.6). The descriptor becomes visible
   * at the next {@link publishUsed}. Throws a `DEVICE_STATE` {@link VirtkitError} if the chain is
   * not in flight on this queue (returned twice, or popped from another queue) — a device bug.
   */
  addUsed(chain: DescriptorChain, writtenLength: number): void {
    if (this.#detached) return;
    const id = chain.id;
    const slots = this.#idSlots[id] ?? 0;
    if (slots === 0 || this.#idChain[id] !== chain) {
      throw new VirtkitError(
        'DEVICE_STATE',
        `buffer id ${id} is not in flight on packed queue ${this.index}; return each popped chain exactly once`,
      );
    }
    const writable = this.#idWritable[id]!;
    let len = writtenLength > 0 ? Math.floor(writtenLength) : 0;
    if (len > writable) len = writable;
    this.#idSlots[id] = 0;
    this.#idChain[id] = undefined;
    this.#inFlight--;
    this.#outstanding -= slots;

    const used = this.#nextUsed;
    const desc16 = this.#desc16;
    this.#desc32[(used << 2) + 2] = len;
    desc16[(used << 3) + 6] = id;
    // AVAIL = USED = device wrap counter marks it used (§2.8.1); WRITE says len is meaningful (§2.8.3, §2.8.4).
    const flags =
      (this.#usedWrap === 1 ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0) |
      (len > 0 ? VIRTQ_DESC_F_WRITE : 0);
    if (this.#batchFlagsIndex < 0) {
      // The driver polls only the next used slot, so nothing of the batch is visible until the
      // first descriptor's flags are written in publishUsed (§2.8.9, "multi-buffer requests").
      this.#batchFlagsIndex = (used << 3) + 7;
      this.#batchFlags = flags;
    } else {
      desc16[(used << 3) + 7] = flags;
    }
    let next = used + slots;
    if (next >= this.size) {
      next -= this.size;
      this.#usedWrap ^= 1;
    }
    this.#nextUsed = next;
    this.#batchSlots += slots;
  }

  /**
   * Makes the used descriptors added since the last call visible by writing the first one's flags
   * (release). Returns whether the driver asked for a used buffer notification (§2.8.10): ENABLE
   * yes, DISABLE no, DESC (with VIRTIO_F_RING_EVENT_IDX) if the used position passed the
   * offset/wrap the driver gave. False when nothing was added.
   */
  publishUsed(): boolean {
    if (this.#detached || this.#batchFlagsIndex < 0) return false;
    Atomics.store(this.#desc16, this.#batchFlagsIndex, this.#batchFlags);
    const travelled = this.#batchSlots;
    this.#batchFlagsIndex = -1;
    this.#batchSlots = 0;
    // Sequentially consistent after the store above: either the driver sees the used descriptors
    // or this load sees the driver's new suppression settings, never neither.
    const event = Atomics.load(this.#driverEvent, 0);
    const mode = (event >>> 16) & 3;
    if (mode === RING_EVENT_FLAGS_DISABLE) return false;
    // ENABLE, the reserved value 3, and DESC without EVENT_IDX all mean "notify" (Linux does so).
    if (mode !== RING_EVENT_FLAGS_DESC || !this.#eventIdx) return true;
    return this.#crossed(event & 0xffff, this.#nextUsed, this.#usedWrap, travelled);
  }

  /**
   * True if moving to `position` (with wrap counter `wrap`) over the last `travelled` slots passed
   * the slot named by `offWrap`. Positions are compared in the current lap's coordinates: an offset
   * from the previous lap counts as negative (Linux virtqueue_kick_prepare_packed).
   */
  #crossed(offWrap: number, position: number, wrap: number, travelled: number): boolean {
    if (travelled >= this.size) return true;
    let offset = offWrap & 0x7fff;
    if (offWrap >>> EVENT_WRAP_SHIFT !== wrap) offset -= this.size;
    return vringNeedEvent(offset, position, position - travelled);
  }

  /** Asks the driver not to send available buffer notifications (a hint it may ignore). */
  disableNotifications(): void {
    if (this.#detached) return;
    Atomics.store(this.#deviceEvent, 0, RING_EVENT_FLAGS_DISABLE << 16);
  }

  /**
   * Asks the driver for available buffer notifications again — with EVENT_IDX, for the next
   * descriptor the device will read — then re-checks the ring. Returns true if a chain is already
   * available, in which case the caller must process again (the driver may not notify for it).
   */
  enableNotifications(): boolean {
    if (this.#detached || this.#broken) return false;
    const value = this.#eventIdx
      ? (RING_EVENT_FLAGS_DESC << 16) | this.#nextAvail | (this.#availWrap << EVENT_WRAP_SHIFT)
      : RING_EVENT_FLAGS_ENABLE << 16;
    // One 32-bit store, so the driver never sees DESC with a stale offset. Sequentially consistent
    // with the load in hasAvailable(): a full fence between enabling and re-checking.
    Atomics.store(this.#deviceEvent, 0, value);
    return this.hasAvailable();
  }

  /**
   * The device's position: next slot to read and its expected wrap counter, next used slot and
   * the device wrap counter. Includes used descriptors not yet published; call
   * {@link publishUsed} before handing the ring over.
   */
  position(): QueuePosition {
    return {
      nextAvail: this.#nextAvail,
      availWrap: this.#availWrap === 1,
      nextUsed: this.#nextUsed,
      usedWrap: this.#usedWrap === 1,
    };
  }

  /** Stops the queue: nothing is read from or written to the ring any more. */
  detach(): void {
    this.#detached = true;
    this.#batchFlagsIndex = -1;
    this.#batchSlots = 0;
  }

  #violation(code: ViolationCode, message: string): null {
    this.#fail(code, message);
    return null;
  }

  #fail(code: ViolationCode, message: string): false {
    // A bad saved copy (resubmit) is skipped; the ring itself is not at fault.
    const saved = this.#saved;
    if (!saved) this.#broken = true;
    this.#readable = null;
    this.#writable = null;
    try {
      this.#onViolation({ code, message, queue: this.index, needsReset: !saved });
    } catch {
      // Sinks must not throw; if one does anyway, a guest's mistake still must not become an
      // exception in the device loop.
    }
    return false;
  }

  /** Where descriptor `slot` is: a ring slot, or a place in a saved chain ({@link resubmit}). */
  #place(slot: number): string {
    return this.#saved ? `saved descriptor ${slot}` : `ring slot ${slot}`;
  }

  #descriptorPlace(slot: number, entry: number): string {
    if (entry >= 0) return `entry ${entry} of the indirect table of ${this.#place(slot)}`;
    return this.#saved ? `saved descriptor ${slot}` : `descriptor in ring slot ${slot}`;
  }
}
