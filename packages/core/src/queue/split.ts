/**
 * The device side of a split virtqueue (virtio 1.2 §2.7).
 *
 * Everything the guest wrote is untrusted: each descriptor field is read exactly once, validated,
 * and only the validated copy is handed out, so a guest that rewrites its ring while the device
 * walks it cannot make the device touch memory it did not check (no double fetch).
 */

import {
  DESCRIPTOR_SIZE,
  MAX_QUEUE_SIZE,
  SPLIT_ALIGN_AVAIL,
  SPLIT_ALIGN_DESC,
  SPLIT_ALIGN_USED,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
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
  isValidSplitQueueSize,
  regionUint16Array,
  regionUint32Array,
  splitRingBytes,
  vringNeedEvent,
} from './ring-util.js';
import type {
  DeviceQueue,
  DeviceQueueOptions,
  QueuePosition,
  QueueSetup,
  RingLayout,
} from './types.js';

const NO_SEGMENTS: readonly Segment[] = Object.freeze([]);
/** Chains must total less than 2^32 bytes: the used ring's `len` is a u32 (§2.7.8). */
const MAX_CHAIN_BYTES = 0x1_0000_0000;
/** An indirect table may hold at most 32768 descriptors (§2.7.5.3.1: Queue Size limit). */
const MAX_INDIRECT_BYTES = MAX_QUEUE_SIZE * DESCRIPTOR_SIZE;

/**
 * Device side of a split virtqueue (§2.7): pops validated descriptor chains from the available
 * ring, returns them through the used ring, and implements both notification-suppression schemes
 * (flags, §2.7.7/§2.7.10, and VIRTIO_F_EVENT_IDX).
 *
 * A guest protocol violation (a malformed ring or chain) never throws: it is reported once to
 * `options.onViolation` with `needsReset: true`, and the queue becomes {@link broken} and pops
 * nothing more. Chains already popped can still be completed.
 *
 * Guest memory may be a SharedArrayBuffer that a vCPU thread writes concurrently: the index
 * fields go through `Atomics` so reading `avail.idx` acquires the entries the driver wrote before
 * it, and storing `used.idx` releases the used elements written before it.
 *
 * @example
 * ```ts
 * const queue = new SplitDeviceQueue(
 *   { index: 0, size: 256, descAddr, driverAddr, deviceAddr, eventIdx: true, indirect: true },
 *   { memory, onViolation: (v) => console.warn(v.message) },
 * );
 * do {
 *   queue.disableNotifications();
 *   for (let chain = queue.pop(); chain; chain = queue.pop()) {
 *     queue.addUsed(chain, handle(chain));
 *   }
 *   if (queue.publishUsed()) signalUsedBuffer();
 * } while (queue.enableNotifications());
 * ```
 */
export class SplitDeviceQueue implements DeviceQueue {
  /** Queue index on its device. */
  readonly index: number;
  /** Queue size (ring entries). */
  readonly size: number;
  /** Ring layout. */
  readonly layout: RingLayout = 'split';

  readonly #memory: GuestMemory;
  readonly #onViolation: ViolationSink;
  readonly #eventIdx: boolean;
  readonly #indirect: boolean;
  readonly #mask: number;

  // Views over the three ring parts, made once: each part was checked at construction to lie in
  // one region, so hot-path accesses are plain typed-array indexing with no region lookup, no
  // bounds arithmetic on guest addresses and no DataView calls. (Typed arrays rather than the
  // region's DataView so the index fields can use Atomics; the host is little-endian, memory.ts.)
  /** Descriptor table, four u32 words per descriptor: addr low, addr high, len, flags | next << 16. */
  readonly #desc: Uint32Array;
  /** Available ring as u16: [0] flags, [1] idx, [2 + i] ring, [2 + size] used_event. */
  readonly #avail: Uint16Array;
  /** Used ring as u16: [0] flags, [1] idx, [2 + 4 * size] avail_event. */
  readonly #used16: Uint16Array;
  /** Used ring as u32: element i is [1 + 2i] id, [2 + 2i] len. */
  readonly #used32: Uint32Array;
  readonly #usedEventSlot: number;
  readonly #availEventSlot: number;

  /** Per head index: the chain the device holds (popped, not yet added to the used ring). */
  readonly #owned: (DescriptorChain | undefined)[];
  #inFlight = 0;

  #nextAvail: number;
  /** avail.idx as last read: entries before it are known to be published, so pop re-reads the
   * index only when it catches up (QEMU's shadow_avail_idx). */
  #shadowAvail: number;
  #nextUsed: number;
  /** used.idx at the last publish: the "old" of the event-index rule. */
  #publishedUsed: number;
  /** Elements added since the last publish. */
  #pending = 0;
  /** False until the first publish after starting from a restored position, whose interrupt
   * history is unknown: that publish interrupts unconditionally (QEMU's signalled_used_valid). */
  #publishedValid: boolean;
  #notificationsDisabled = false;
  #broken = false;
  #detached = false;

  // The chain being walked. Instance fields rather than a closure or a state object, so a pop
  // allocates nothing besides the chain it returns and its segments.
  #readable: Segment[] | null = null;
  #writable: Segment[] | null = null;
  #readableLength = 0;
  #writableLength = 0;
  #seenWritable = false;
  /** Scratch copy of one entry of an indirect table that spans regions. */
  readonly #entryBytes = new Uint8Array(DESCRIPTOR_SIZE);
  readonly #entryView = new DataView(this.#entryBytes.buffer);

  /**
   * @throws QueueConfigError if the size is not a power of two from 1 to 32768, a ring part is
   * misaligned (§2.7 "Virtqueue Part Alignment"), or a ring part does not lie inside one region
   * of guest memory.
   */
  constructor(setup: QueueSetup, options: DeviceQueueOptions) {
    const { size, index } = setup;
    if (!isValidSplitQueueSize(size)) {
      throw new QueueConfigError(
        `queue ${index}: size ${size} is not a power of two between 1 and ${MAX_QUEUE_SIZE}`,
      );
    }
    const bytes = splitRingBytes(size);
    const memory = options.memory;
    const desc = ringPart(
      memory,
      index,
      'descriptor table',
      setup.descAddr,
      bytes.desc,
      SPLIT_ALIGN_DESC,
    );
    const avail = ringPart(
      memory,
      index,
      'available ring',
      setup.driverAddr,
      bytes.avail,
      SPLIT_ALIGN_AVAIL,
    );
    const used = ringPart(
      memory,
      index,
      'used ring',
      setup.deviceAddr,
      bytes.used,
      SPLIT_ALIGN_USED,
    );
    const desc32 = regionUint32Array(desc, setup.descAddr, bytes.desc);
    const avail16 = regionUint16Array(avail, setup.driverAddr, bytes.avail);
    const used16 = regionUint16Array(used, setup.deviceAddr, bytes.used);
    const used32 = regionUint32Array(used, setup.deviceAddr, bytes.used);
    if (!desc32 || !avail16 || !used16 || !used32) {
      // Only possible when a region starts at a guest address that is not itself aligned.
      throw new QueueConfigError(
        `queue ${index}: a ring part is not aligned in the buffer backing its guest memory region`,
      );
    }

    let nextAvail = 0;
    let nextUsed = 0;
    if (options.position) {
      nextAvail = options.position.nextAvail;
      nextUsed = options.position.nextUsed;
      if (!isU16(nextAvail) || !isU16(nextUsed)) {
        throw new QueueConfigError(
          `queue ${index}: position ${nextAvail}/${nextUsed} is not a pair of 16-bit ring indices`,
        );
      }
    }

    this.index = index;
    this.size = size;
    this.#memory = memory;
    this.#onViolation = options.onViolation;
    this.#eventIdx = setup.eventIdx;
    this.#indirect = setup.indirect;
    this.#mask = size - 1;
    this.#desc = desc32;
    this.#avail = avail16;
    this.#used16 = used16;
    this.#used32 = used32;
    this.#usedEventSlot = 2 + size;
    this.#availEventSlot = 2 + 4 * size;
    this.#owned = new Array<DescriptorChain | undefined>(size).fill(undefined);
    this.#nextAvail = nextAvail;
    this.#shadowAvail = nextAvail;
    this.#nextUsed = nextUsed;
    this.#publishedUsed = nextUsed;
    this.#publishedValid = options.position === undefined;
    // A ring handed over from another device instance may still carry its NO_NOTIFY.
    this.#notificationsDisabled = (Atomics.load(used16, 0) & VIRTQ_USED_F_NO_NOTIFY) !== 0;
  }

  /** True after a protocol violation: the queue pops no more chains until the device is reset. */
  get broken(): boolean {
    return this.#broken;
  }

  /** Chains popped and not yet returned with {@link addUsed}. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * The next available chain, validated whole, or `null` if there is none or the queue is broken
   * or detached. A malformed chain is reported as a violation and breaks the queue; this never
   * throws.
   */
  pop(): DescriptorChain | null {
    if (this.#broken || this.#detached) return null;
    const nextAvail = this.#nextAvail;
    if (nextAvail === this.#shadowAvail) {
      const availIdx = Atomics.load(this.#avail, 1);
      if (availIdx === nextAvail) return null;
      if (((availIdx - nextAvail) & 0xffff) > this.size) {
        return this.#violation(
          'AVAIL_INDEX_JUMP',
          `driver moved the available index from ${nextAvail} to ${availIdx}, more than queue size ${this.size} ahead`,
        );
      }
      this.#shadowAvail = availIdx;
    }
    const head = this.#avail[2 + (nextAvail & this.#mask)]!;
    if (head >= this.size) {
      return this.#violation(
        'HEAD_OUT_OF_RANGE',
        `driver made descriptor ${head} available, but queue size is ${this.size}`,
      );
    }
    if (this.#owned[head] !== undefined) {
      // QEMU's "Virtqueue size exceeded", made exact: the driver reused a descriptor the device
      // still owns, so it either lost track of it or offers more buffers than the ring has.
      return this.#violation(
        'HEAD_IN_FLIGHT',
        `driver made descriptor ${head} available again while the device still owns it`,
      );
    }
    const chain = this.#walk(head);
    if (chain === null) return null;
    this.#owned[head] = chain;
    this.#inFlight++;
    const next = (nextAvail + 1) & 0xffff;
    this.#nextAvail = next;
    // Keep avail_event at the next entry to consume (QEMU virtqueue_split_pop), so with
    // EVENT_IDX the driver kicks only when it adds the entry the device would next look at —
    // unless notifications are disabled: then it stays behind, and the driver does not kick.
    if (this.#eventIdx && !this.#notificationsDisabled) this.#used16[this.#availEventSlot] = next;
    return chain;
  }

  /** True if the driver has made a chain available that was not popped yet (and not broken). */
  hasAvailable(): boolean {
    if (this.#broken || this.#detached) return false;
    return (
      this.#nextAvail !== this.#shadowAvail || Atomics.load(this.#avail, 1) !== this.#nextAvail
    );
  }

  /**
   * Writes a used element for `chain` with `writtenLength` bytes; the driver sees it at the next
   * {@link publishUsed}. A length above the chain's writable length is a device bug and is
   * clamped so the driver is never told about bytes outside its buffer.
   *
   * @throws VirtkitError (`DEVICE_STATE`) if `chain` is not in flight on this queue (returned
   * twice, or popped from another queue) — a device bug, not a guest one.
   */
  addUsed(chain: DescriptorChain, writtenLength: number): void {
    if (this.#detached) return;
    const id = chain.id;
    // Identity, not just the id: a chain popped from another queue may carry an id in flight here.
    if (this.#owned[id] !== chain) {
      throw new VirtkitError(
        'DEVICE_STATE',
        `queue ${this.index}: chain ${id} was added to the used ring but is not in flight on this queue`,
      );
    }
    this.#owned[id] = undefined;
    this.#inFlight--;
    const writable = chain.writableLength;
    const len = writtenLength > writable ? writable : writtenLength >= 0 ? writtenLength >>> 0 : 0;
    const slot = 1 + 2 * (this.#nextUsed & this.#mask);
    this.#used32[slot] = id;
    this.#used32[slot + 1] = len;
    this.#nextUsed = (this.#nextUsed + 1) & 0xffff;
    this.#pending++;
  }

  /**
   * Publishes the elements added since the last call (one release store of used.idx) and returns
   * true if the driver wants an interrupt for them: without EVENT_IDX unless the driver set
   * VIRTQ_AVAIL_F_NO_INTERRUPT; with EVENT_IDX if used.idx moved past used_event (§2.7.7.2).
   * Returns false when nothing was added.
   */
  publishUsed(): boolean {
    if (this.#detached || this.#pending === 0) return false;
    const newUsed = this.#nextUsed;
    // Seq-cst store: releases the elements written above, and orders the flag/used_event loads
    // below after it (the full barrier Linux and QEMU place between the two).
    Atomics.store(this.#used16, 1, newUsed);
    const oldUsed = this.#publishedUsed;
    const pending = this.#pending;
    this.#publishedUsed = newUsed;
    this.#pending = 0;
    if (!this.#eventIdx) return (Atomics.load(this.#avail, 0) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    const usedEvent = Atomics.load(this.#avail, this.#usedEventSlot);
    if (!this.#publishedValid || pending > 0xffff) {
      // Unknown history, or the u16 interval [old, new) wrapped: interrupt to be safe.
      this.#publishedValid = true;
      return true;
    }
    return vringNeedEvent(usedEvent, newUsed, oldUsed);
  }

  /**
   * Asks the driver not to kick: sets VIRTQ_USED_F_NO_NOTIFY. With EVENT_IDX nothing is written,
   * but {@link pop} stops moving avail_event, so the driver kicks at most once more (when it
   * passes the entry it names) until {@link enableNotifications} — as Linux's vhost does.
   */
  disableNotifications(): void {
    if (this.#detached || this.#notificationsDisabled) return;
    this.#notificationsDisabled = true;
    if (!this.#eventIdx) Atomics.store(this.#used16, 0, VIRTQ_USED_F_NO_NOTIFY);
  }

  /**
   * Asks the driver to kick on new buffers (clears VIRTQ_USED_F_NO_NOTIFY, or sets avail_event to
   * the next entry to consume), then re-reads avail.idx: true means buffers arrived meanwhile and
   * the caller must process again, or a kick could be lost. False when broken or detached.
   */
  enableNotifications(): boolean {
    if (this.#broken || this.#detached) return false;
    if (this.#eventIdx) {
      this.#notificationsDisabled = false;
      Atomics.store(this.#used16, this.#availEventSlot, this.#nextAvail);
    } else if (this.#notificationsDisabled) {
      this.#notificationsDisabled = false;
      Atomics.store(this.#used16, 0, 0);
    }
    // Seq-cst store then seq-cst load: the driver either sees our request to be notified or we
    // see its new index (it stores avail.idx, then loads used.flags / avail_event).
    return Atomics.load(this.#avail, 1) !== this.#nextAvail;
  }

  /** Where the device is in the ring (vhost-user GET_VRING_BASE, snapshots). */
  position(): QueuePosition {
    return { nextAvail: this.#nextAvail, nextUsed: this.#nextUsed };
  }

  /**
   * Stops the queue on device reset: later pops return `null` and {@link addUsed},
   * {@link publishUsed} and the notification calls do nothing, so completions of requests still
   * in flight never reach a ring the driver has reset.
   */
  detach(): void {
    this.#detached = true;
  }

  /** Walks and validates the chain starting at `head`; `null` after reporting a violation. */
  #walk(head: number): DescriptorChain | null {
    this.#readable = null;
    this.#writable = null;
    this.#readableLength = 0;
    this.#writableLength = 0;
    this.#seenWritable = false;
    const desc = this.#desc;
    const size = this.size;
    let index = head;
    let count = 0;
    for (;;) {
      if (++count > size) {
        return this.#violation(
          'CHAIN_TOO_LONG',
          `descriptor chain starting at ${head} is longer than queue size ${size} (or loops)`,
        );
      }
      const word = index << 2;
      const low = desc[word]!;
      const high = desc[word + 1]!;
      const len = desc[word + 2]!;
      const flagsNext = desc[word + 3]!;
      if ((flagsNext & VIRTQ_DESC_F_INDIRECT) !== 0) {
        if (!this.#walkIndirect(index, low, high, len, flagsNext)) return null;
        break;
      }
      if (!this.#addBuffer(low, high, len, flagsNext, index, false)) return null;
      if ((flagsNext & VIRTQ_DESC_F_NEXT) === 0) break;
      index = flagsNext >>> 16;
      if (index >= size) {
        return this.#violation(
          'NEXT_OUT_OF_RANGE',
          `descriptor ${word >>> 2} chains to descriptor ${index}, but queue size is ${size}`,
        );
      }
    }
    const chain = new DescriptorChain(
      this.#memory,
      head,
      this.#readable ?? NO_SEGMENTS,
      this.#writable ?? NO_SEGMENTS,
      this.#readableLength,
      this.#writableLength,
      1,
    );
    this.#readable = null;
    this.#writable = null;
    return chain;
  }

  /**
   * Walks the indirect table that descriptor `index` refers to (§2.7.5.3). It ends the chain: it
   * may follow normal descriptors but may not have NEXT. Its own WRITE flag is ignored
   * (§2.7.5.3.2).
   */
  #walkIndirect(index: number, low: number, high: number, len: number, flags: number): boolean {
    if (!this.#indirect) {
      this.#violation(
        'INDIRECT_NOT_NEGOTIATED',
        `descriptor ${index} refers to an indirect table, but VIRTIO_F_INDIRECT_DESC was not negotiated`,
      );
      return false;
    }
    if ((flags & VIRTQ_DESC_F_NEXT) !== 0) {
      this.#violation(
        'INDIRECT_WITH_NEXT',
        `descriptor ${index} sets both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT`,
      );
      return false;
    }
    if (len === 0 || len % DESCRIPTOR_SIZE !== 0 || len > MAX_INDIRECT_BYTES) {
      this.#violation(
        'INDIRECT_BAD_LENGTH',
        `descriptor ${index} refers to an indirect table of ${len} bytes, which is not 1 to ${MAX_QUEUE_SIZE} descriptors of ${DESCRIPTOR_SIZE} bytes`,
      );
      return false;
    }
    const memory = this.#memory;
    const table = guestAddressFromParts(low, high);
    if (table === undefined || !memory.checkRange(table, len)) {
      this.#violation(
        'INDIRECT_OUT_OF_MEMORY',
        `descriptor ${index} refers to an indirect table of ${len} bytes at ${formatAddressParts(low, high)}, outside guest memory`,
      );
      return false;
    }
    // One region (the usual case): read through its DataView. A table spanning adjacent regions
    // is legal, just rare: read it field by field through GuestMemory.
    const region: GuestRegion | undefined = memory.findRegion(table, len);
    const data = region?.data;
    const base = region ? table - region.guestAddress : 0;
    const entries = len / DESCRIPTOR_SIZE;
    let entry = 0;
    let count = 0;
    for (;;) {
      if (++count > entries) {
        this.#violation(
          'CHAIN_TOO_LONG',
          `indirect table of ${entries} descriptors at ${formatAddress(table)} holds a longer chain (or loops)`,
        );
        return false;
      }
      let entryLow: number;
      let entryHigh: number;
      let entryLen: number;
      let entryFlags: number;
      if (data) {
        const at = base + entry * DESCRIPTOR_SIZE;
        entryLow = data.getUint32(at, true);
        entryHigh = data.getUint32(at + 4, true);
        entryLen = data.getUint32(at + 8, true);
        entryFlags = data.getUint32(at + 12, true);
      } else {
        // Copy the whole entry: its fields may themselves straddle the region boundary.
        memory.read(table + entry * DESCRIPTOR_SIZE, this.#entryBytes);
        const copy = this.#entryView;
        entryLow = copy.getUint32(0, true);
        entryHigh = copy.getUint32(4, true);
        entryLen = copy.getUint32(8, true);
        entryFlags = copy.getUint32(12, true);
      }
      if ((entryFlags & VIRTQ_DESC_F_INDIRECT) !== 0) {
        this.#violation(
          'INDIRECT_NESTED',
          `indirect descriptor ${entry} in the table of descriptor ${index} refers to another indirect table`,
        );
        return false;
      }
      if (!this.#addBuffer(entryLow, entryHigh, entryLen, entryFlags, entry, true)) return false;
      if ((entryFlags & VIRTQ_DESC_F_NEXT) === 0) return true;
      const next = entryFlags >>> 16;
      if (next >= entries) {
        this.#violation(
          'NEXT_OUT_OF_RANGE',
          `indirect descriptor ${entry} chains to ${next}, but its table holds ${entries} descriptors`,
        );
        return false;
      }
      entry = next;
    }
  }

  /**
   * Validates one buffer descriptor and appends its segment; false after reporting a violation.
   * Zero-length descriptors are allowed but produce no segment (nothing to access).
   */
  #addBuffer(
    low: number,
    high: number,
    len: number,
    flags: number,
    index: number,
    inIndirect: boolean,
  ): boolean {
    const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
    if (writable) {
      this.#seenWritable = true;
    } else if (this.#seenWritable) {
      this.#violation(
        'READABLE_AFTER_WRITABLE',
        `${describe(index, inIndirect)} is device-readable but follows a device-writable descriptor`,
      );
      return false;
    }
    if (len === 0) return true;
    const addr = guestAddressFromParts(low, high);
    // findRegion is the fast path (one cached region compare); checkRange admits a buffer that
    // spans adjacent regions, which ChainReader/ChainWriter handle.
    if (
      addr === undefined ||
      (this.#memory.findRegion(addr, len) === undefined && !this.#memory.checkRange(addr, len))
    ) {
      this.#violation(
        'DESCRIPTOR_OUT_OF_MEMORY',
        `${describe(index, inIndirect)} points to ${len} bytes at ${formatAddressParts(low, high)}, outside guest memory`,
      );
      return false;
    }
    if (this.#readableLength + this.#writableLength + len >= MAX_CHAIN_BYTES) {
      this.#violation(
        'CHAIN_TOO_LARGE',
        `descriptor chain totals ${this.#readableLength + this.#writableLength + len} bytes or more, beyond the 4 GiB limit`,
      );
      return false;
    }
    const segment: Segment = { addr, len };
    if (writable) {
      if (this.#writable === null) this.#writable = [segment];
      else this.#writable.push(segment);
      this.#writableLength += len;
    } else {
      if (this.#readable === null) this.#readable = [segment];
      else this.#readable.push(segment);
      this.#readableLength += len;
    }
    return true;
  }

  /** Reports a violation and breaks the queue. Returns null so pop can `return` it. */
  #violation(code: ViolationCode, message: string): null {
    this.#broken = true;
    this.#readable = null;
    this.#writable = null;
    try {
      this.#onViolation({ code, message, queue: this.index, needsReset: true });
    } catch (error) {
      // The sink must not throw; if it does, surface the error without breaking the device loop.
      queueMicrotask(() => {
        throw error;
      });
    }
    return null;
  }
}

function describe(index: number, inIndirect: boolean): string {
  return inIndirect ? `indirect descriptor ${index}` : `descriptor ${index}`;
}

function isU16(value: number): boolean {
  return Number.isInteger(value) && value >= 0 && value <= 0xffff;
}

/** The region holding one ring part, after checking its address and alignment. */
function ringPart(
  memory: GuestMemory,
  queue: number,
  what: string,
  address: number,
  bytes: number,
  align: number,
): GuestRegion {
  if (!Number.isSafeInteger(address) || address < 0) {
    throw new QueueConfigError(`queue ${queue}: ${what} address ${address} is not a guest address`);
  }
  if (address % align !== 0) {
    throw new QueueConfigError(
      `queue ${queue}: ${what} address ${formatAddress(address)} is not ${align}-byte aligned`,
    );
  }
  const region = memory.findRegion(address, bytes);
  if (!region) {
    throw new QueueConfigError(
      `queue ${queue}: ${what} (${bytes} bytes at ${formatAddress(address)}) does not lie inside one region of guest memory`,
    );
  }
  return region;
}
