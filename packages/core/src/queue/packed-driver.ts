/**
 * The driver side of a packed virtqueue (virtio 1.2 §2.8), modelled on Linux's
 * drivers/virtio/virtio_ring.c: what the test harness and userspace drivers use to hand buffers
 * to a device and collect them back.
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
import { formatAddress, QueueConfigError, VirtkitError } from '../errors.js';
import type { GuestMemory } from '../memory.js';
import type { Segment } from './chain.js';
import {
  checkDriverSegment,
  regionUint16Array,
  regionUint32Array,
  vringNeedEvent,
} from './ring-util.js';
import type { DriverQueue, DriverQueueOptions, QueuePosition, UsedBuffer } from './types.js';

const EVENT_WRAP_SHIFT = 15;
const NO_TABLE = -1;

/** Options of {@link PackedDriverQueue}: the common driver options plus a starting position. */
export interface PackedDriverQueueOptions extends DriverQueueOptions {
  /**
   * Start at this ring slot and wrap counter instead of slot 0 with wrap counter 1, as if the ring
   * had already been used up to there with nothing in flight: for matching a device started from
   * a {@link QueuePosition} (vhost-user SET_VRING_BASE, snapshots) and for wrap-around tests.
   * `nextAvail` must equal `nextUsed` and `availWrap` must equal `usedWrap`.
   */
  readonly startPosition?: QueuePosition;
}

/** An indirect table the driver owns; reused once its buffer comes back. */
interface IndirectTable {
  readonly addr: number;
  /** Entries it holds. */
  readonly capacity: number;
}

/**
 * Driver side of a packed virtqueue. Buffers added with {@link add} become visible to the device
 * at {@link publish}, which writes the head flags of the batch last-to-first so the device never
 * sees a half-written chain or batch (§2.8.21).
 *
 * A device that returns a buffer id that is not in flight, or reports more bytes written than the
 * buffer can hold, is a bug the driver cannot recover from: {@link takeUsed} throws a `DRIVER`
 * {@link VirtkitError} (Linux marks the ring broken in the same places).
 *
 * @example
 * ```ts
 * const queue = new PackedDriverQueue<string>(memory, {
 *   index: 0, size: 256, eventIdx: true, indirect: true, allocate: (n, a) => heap.allocate(n, a),
 * });
 * queue.add([{ addr: request, len: 16 }], [{ addr: reply, len: 512 }], 'first');
 * if (queue.publish()) notifyDevice(0);
 * // ... after the device's interrupt:
 * for (let used = queue.takeUsed(); used; used = queue.takeUsed()) console.log(used.token, used.len);
 * ```
 */
export class PackedDriverQueue<T = unknown> implements DriverQueue<T> {
  /** Queue index on its device. */
  readonly index: number;
  /** Queue size (ring entries). */
  readonly size: number;
  /** Ring layout. */
  readonly layout = 'packed' as const;
  /** Guest address of the descriptor ring (16 × size bytes). */
  readonly descAddr: number;
  /** Guest address of the driver event suppression structure (the transport's driver area). */
  readonly driverAddr: number;
  /** Guest address of the device event suppression structure (the transport's device area). */
  readonly deviceAddr: number;

  readonly #memory: GuestMemory;
  readonly #allocate: (size: number, align: number) => number;
  readonly #eventIdx: boolean;
  readonly #indirect: boolean;
  readonly #desc16: Uint16Array;
  readonly #desc32: Uint32Array;
  readonly #driverEvent: Uint32Array;
  readonly #deviceEvent: Uint32Array;

  #nextAvail: number;
  #availWrap: number;
  #nextUsed: number;
  #usedWrap: number;
  #free: number;
  /** Ring slots made available since the last publish. */
  #added = 0;
  /** Driver event suppression mode last written. */
  #eventMode = RING_EVENT_FLAGS_ENABLE;

  /** Heads written but not yet flagged available: u16 index of their flags and the flags. */
  readonly #pendingFlagsIndex: Int32Array;
  readonly #pendingFlags: Uint16Array;
  #pendingCount = 0;

  /** Free buffer ids, a stack. */
  readonly #freeIds: Uint16Array;
  #freeIdCount: number;
  /** Per buffer id: ring slots used, 0 when the id is free. */
  readonly #idSlots: Uint16Array;
  /** Per buffer id: writable bytes, the most the device may report. */
  readonly #idWritable: Float64Array;
  /** Per buffer id: index into #tables of its indirect table, or NO_TABLE. */
  readonly #idTable: Int32Array;
  readonly #tokens: (T | undefined)[];
  readonly #tables: IndirectTable[] = [];
  readonly #freeTables: number[] = [];

  /**
   * Allocates the ring (16-byte aligned) and both event suppression structures (4-byte aligned)
   * with `options.allocate` and zeroes them (§2.8.13: the ring is zero-initialized). Throws
   * {@link QueueConfigError} for a size outside 1..32768 or memory the allocator returned that is
   * misaligned or outside one guest memory region.
   */
  constructor(memory: GuestMemory, options: PackedDriverQueueOptions) {
    const { index, size } = options;
    if (!Number.isInteger(size) || size < 1 || size > MAX_QUEUE_SIZE) {
      throw new QueueConfigError(
        `packed queue size ${size} is not between 1 and ${MAX_QUEUE_SIZE}`,
      );
    }
    const start = options.startPosition ?? { nextAvail: 0, nextUsed: 0 };
    const startSlot = start.nextAvail;
    const startWrap = start.availWrap === false ? 0 : 1;
    if (
      !Number.isInteger(startSlot) ||
      startSlot < 0 ||
      startSlot >= size ||
      start.nextUsed !== startSlot ||
      (start.usedWrap === false ? 0 : 1) !== startWrap
    ) {
      throw new QueueConfigError(
        `packed queue ${index}: start position ${JSON.stringify(start)} is not one ring slot and wrap counter with nothing in flight`,
      );
    }
    this.index = index;
    this.size = size;
    this.#memory = memory;
    this.#allocate = options.allocate;
    this.#eventIdx = options.eventIdx;
    this.#indirect = options.indirect;
    this.#free = size;

    const ringBytes = 16 * size;
    this.descAddr = options.allocate(ringBytes, PACKED_ALIGN_DESC);
    this.driverAddr = options.allocate(4, PACKED_ALIGN_EVENT);
    this.deviceAddr = options.allocate(4, PACKED_ALIGN_EVENT);
    this.#desc16 = this.#view16(this.descAddr, ringBytes, PACKED_ALIGN_DESC);
    this.#desc32 = this.#view32(this.descAddr, ringBytes, PACKED_ALIGN_DESC);
    this.#driverEvent = this.#view32(this.driverAddr, 4, PACKED_ALIGN_EVENT);
    this.#deviceEvent = this.#view32(this.deviceAddr, 4, PACKED_ALIGN_EVENT);
    this.#desc32.fill(0);
    this.#driverEvent[0] = 0;
    this.#deviceEvent[0] = 0;
    // The ring as a finished lap would leave it: slots before the start were used with the
    // current wrap counter, the rest with the other one (a zeroed slot reads as used with wrap
    // counter 0, so only the slots marked used with wrap counter 1 need writing).
    const usedFlags = VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED;
    if (startWrap === 1)
      for (let slot = 0; slot < startSlot; slot++) this.#desc16[(slot << 3) + 7] = usedFlags;
    else for (let slot = startSlot; slot < size; slot++) this.#desc16[(slot << 3) + 7] = usedFlags;
    this.#nextAvail = startSlot;
    this.#nextUsed = startSlot;
    this.#availWrap = startWrap;
    this.#usedWrap = startWrap;

    this.#pendingFlagsIndex = new Int32Array(size);
    this.#pendingFlags = new Uint16Array(size);
    this.#freeIds = new Uint16Array(size);
    // Hand out ids 0, 1, 2, … first, like Linux's initial free list.
    for (let i = 0; i < size; i++) this.#freeIds[i] = size - 1 - i;
    this.#freeIdCount = size;
    this.#idSlots = new Uint16Array(size);
    this.#idWritable = new Float64Array(size);
    this.#idTable = new Int32Array(size).fill(NO_TABLE);
    this.#tokens = new Array<T | undefined>(size);
  }

  #check(address: number, length: number, align: number) {
    if (!Number.isSafeInteger(address) || address % align !== 0) {
      throw new QueueConfigError(
        `allocator returned ${formatAddress(address)}, not ${align}-byte aligned guest memory`,
      );
    }
    const region = this.#memory.findRegion(address, length);
    if (!region) {
      throw new QueueConfigError(
        `allocator returned ${length} bytes at ${formatAddress(address)}, not inside one guest memory region`,
      );
    }
    return region;
  }

  #view16(address: number, length: number, align: number): Uint16Array {
    const view = regionUint16Array(this.#check(address, length, align), address, length);
    if (!view) throw new QueueConfigError('packed ring is misaligned in its backing buffer');
    return view;
  }

  #view32(address: number, length: number, align: number): Uint32Array {
    const view = regionUint32Array(this.#check(address, length, align), address, length);
    if (!view) throw new QueueConfigError('packed ring is misaligned in its backing buffer');
    return view;
  }

  /** Ring slots free for new buffers. */
  get freeDescriptors(): number {
    return this.#free;
  }

  /** Buffers added and not yet taken back with {@link takeUsed}. */
  get inFlight(): number {
    return this.size - this.#freeIdCount;
  }

  /**
   * Adds a buffer: `readable` segments (device reads) then `writable` ones (device writes). Uses
   * one ring slot and an indirect table when VIRTIO_F_INDIRECT_DESC was negotiated and there is
   * more than one segment, one slot per segment otherwise. Returns false when the ring has no
   * room; the buffer becomes visible to the device at {@link publish}. Throws a `DRIVER`
   * {@link VirtkitError} for an empty buffer, a segment that is not a 64-bit address and 32-bit
   * length, or a direct chain longer than the ring.
   */
  add(readable: readonly Segment[], writable: readonly Segment[], token: T): boolean {
    const total = readable.length + writable.length;
    if (total === 0) throw new VirtkitError('DRIVER', 'a buffer needs at least one segment');
    let writableLength = 0;
    for (const segment of readable) checkDriverSegment(segment);
    for (const segment of writable) writableLength += checkDriverSegment(segment);
    const useIndirect = this.#indirect && total > 1;
    const slots = useIndirect ? 1 : total;
    if (slots > this.size) {
      throw new VirtkitError(
        'DRIVER',
        `a ${total}-segment buffer does not fit a ${this.size}-entry ring without indirect descriptors`,
      );
    }
    if (slots > this.#free || this.#freeIdCount === 0) return false;

    // The only step that can fail (allocating a table) comes before any state changes.
    const table = useIndirect ? this.#takeTable(total) : NO_TABLE;
    const id = this.#freeIds[--this.#freeIdCount]!;
    if (useIndirect) {
      const { addr } = this.#tables[table]!;
      let offset = addr;
      for (const segment of readable) {
        this.#writeTableEntry(offset, segment, 0);
        offset += 16;
      }
      for (const segment of writable) {
        this.#writeTableEntry(offset, segment, VIRTQ_DESC_F_WRITE);
        offset += 16;
      }
      this.#writeSlot(this.#nextAvail, addr, 16 * total, id, VIRTQ_DESC_F_INDIRECT, true);
      this.#advance(1);
    } else {
      let first = true;
      for (let i = 0; i < total; i++) {
        const isWritable = i >= readable.length;
        const segment = isWritable ? writable[i - readable.length]! : readable[i]!;
        const flags =
          (isWritable ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < total ? VIRTQ_DESC_F_NEXT : 0);
        this.#writeSlot(this.#nextAvail, segment.addr, segment.len, id, flags, first);
        first = false;
        this.#advance(1);
      }
    }
    this.#free -= slots;
    this.#added += slots;
    this.#idSlots[id] = slots;
    this.#idWritable[id] = writableLength;
    this.#idTable[id] = table;
    this.#tokens[id] = token;
    return true;
  }

  /**
   * Writes one ring descriptor. Flags carry AVAIL = wrap and USED = !wrap (§2.8.1). A head's flags
   * are held back until {@link publish}; the rest of a chain is invisible until its head is.
   */
  #writeSlot(slot: number, addr: number, len: number, id: number, flags: number, head: boolean) {
    const base = slot << 2;
    this.#desc32[base] = addr >>> 0;
    this.#desc32[base + 1] = Math.floor(addr / 0x1_0000_0000);
    this.#desc32[base + 2] = len;
    // Linux writes the id into every descriptor; the device reads it from the last (§2.8.6).
    this.#desc16[(slot << 3) + 6] = id;
    const marked = flags | (this.#availWrap === 1 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED);
    if (head) {
      this.#pendingFlagsIndex[this.#pendingCount] = (slot << 3) + 7;
      this.#pendingFlags[this.#pendingCount++] = marked;
    } else {
      this.#desc16[(slot << 3) + 7] = marked;
    }
  }

  #advance(slots: number): void {
    this.#nextAvail += slots;
    if (this.#nextAvail >= this.size) {
      this.#nextAvail -= this.size;
      this.#availWrap ^= 1;
    }
  }

  #writeTableEntry(address: number, segment: Segment, flags: number): void {
    const memory = this.#memory;
    memory.writeU32(address, segment.addr >>> 0);
    memory.writeU32(address + 4, Math.floor(segment.addr / 0x1_0000_0000));
    memory.writeU32(address + 8, segment.len);
    memory.writeU16(address + 12, 0);
    memory.writeU16(address + 14, flags);
  }

  /** A free indirect table with room for `entries`, allocating one when none fits. */
  #takeTable(entries: number): number {
    const free = this.#freeTables;
    for (let i = 0; i < free.length; i++) {
      const table = free[i]!;
      if (this.#tables[table]!.capacity >= entries) {
        free[i] = free[free.length - 1]!;
        free.pop();
        return table;
      }
    }
    // Power-of-two capacities keep the pool small when request sizes vary.
    let capacity = 4;
    while (capacity < entries) capacity *= 2;
    const addr = this.#allocate(16 * capacity, 16);
    if (!this.#memory.findRegion(addr, 16 * capacity)) {
      throw new VirtkitError(
        'DRIVER',
        `allocator returned an indirect table at ${formatAddress(addr)} outside guest memory`,
      );
    }
    this.#tables.push({ addr, capacity });
    return this.#tables.length - 1;
  }

  /**
   * Makes the buffers added since the last call visible to the device: the heads' flags are
   * written last to first, so the device sees the whole batch or none of it. Returns whether the
   * device asked for an available buffer notification (§2.8.10, Linux
   * virtqueue_kick_prepare_packed); false when nothing was added.
   */
  publish(): boolean {
    const count = this.#pendingCount;
    if (count === 0) return false;
    const desc16 = this.#desc16;
    for (let i = count - 1; i > 0; i--) {
      desc16[this.#pendingFlagsIndex[i]!] = this.#pendingFlags[i]!;
    }
    // Release: the first head makes everything before it visible.
    Atomics.store(desc16, this.#pendingFlagsIndex[0]!, this.#pendingFlags[0]!);
    this.#pendingCount = 0;
    const travelled = this.#added;
    this.#added = 0;
    // Sequentially consistent after the store: a full barrier before reading the suppression state.
    const event = Atomics.load(this.#deviceEvent, 0);
    const mode = (event >>> 16) & 3;
    if (mode === RING_EVENT_FLAGS_DISABLE) return false;
    if (mode !== RING_EVENT_FLAGS_DESC || !this.#eventIdx) return true;
    if (travelled >= this.size) return true;
    let offset = event & 0x7fff;
    if (((event >>> EVENT_WRAP_SHIFT) & 1) !== this.#availWrap) offset -= this.size;
    return vringNeedEvent(offset, this.#nextAvail, this.#nextAvail - travelled);
  }

  /** True if the device has published a used buffer that {@link takeUsed} would return. */
  hasUsed(): boolean {
    const flags = Atomics.load(this.#desc16, (this.#nextUsed << 3) + 7);
    const used = flags >>> 15;
    return used === ((flags >>> 7) & 1) && used === this.#usedWrap;
  }

  /**
   * The next used buffer with the bytes the device wrote (0 when the used descriptor lacks
   * WRITE, §2.8.4), or `null`. Throws a `DRIVER` {@link VirtkitError} when the device returns an
   * id that is not in flight or reports more bytes than the buffer's writable segments hold.
   */
  takeUsed(): UsedBuffer<T> | null {
    const slot = this.#nextUsed;
    const flags = Atomics.load(this.#desc16, (slot << 3) + 7);
    const used = flags >>> 15;
    if (used !== ((flags >>> 7) & 1) || used !== this.#usedWrap) return null;
    const id = this.#desc16[(slot << 3) + 6]!;
    const len = (flags & VIRTQ_DESC_F_WRITE) !== 0 ? this.#desc32[(slot << 2) + 2]! : 0;
    const slots = id < this.size ? this.#idSlots[id]! : 0;
    if (slots === 0) {
      throw new VirtkitError(
        'DRIVER',
        `device used buffer id ${id} in ring slot ${slot} of queue ${this.index}, which is not in flight`,
      );
    }
    if (len > this.#idWritable[id]!) {
      throw new VirtkitError(
        'DRIVER',
        `device reported ${len} bytes written to buffer id ${id} of queue ${this.index}, which has ${this.#idWritable[id]} writable bytes`,
      );
    }
    // The used descriptor stands for the whole list: skip its remaining slots (§2.8.6).
    let next = slot + slots;
    if (next >= this.size) {
      next -= this.size;
      this.#usedWrap ^= 1;
    }
    this.#nextUsed = next;
    this.#free += slots;
    this.#idSlots[id] = 0;
    const table = this.#idTable[id]!;
    if (table !== NO_TABLE) {
      this.#freeTables.push(table);
      this.#idTable[id] = NO_TABLE;
    }
    const token = this.#tokens[id] as T;
    this.#tokens[id] = undefined;
    this.#freeIds[this.#freeIdCount++] = id;
    if (this.#eventMode === RING_EVENT_FLAGS_DESC) {
      // Keep asking for an interrupt at the next used slot (Linux virtqueue_get_buf_ctx_packed).
      Atomics.store(this.#driverEvent, 0, this.#eventWord(RING_EVENT_FLAGS_DESC));
    }
    return { token, len };
  }

  /** Asks the device not to send used buffer notifications (a hint it may ignore). */
  disableInterrupts(): void {
    this.#eventMode = RING_EVENT_FLAGS_DISABLE;
    Atomics.store(this.#driverEvent, 0, RING_EVENT_FLAGS_DISABLE << 16);
  }

  /**
   * Asks the device for used buffer notifications again — with EVENT_IDX, for the next used
   * slot — then re-checks the ring. Returns true if used buffers are already pending: take them,
   * since the device may not interrupt for them.
   */
  enableInterrupts(): boolean {
    this.#eventMode = this.#eventIdx ? RING_EVENT_FLAGS_DESC : RING_EVENT_FLAGS_ENABLE;
    // One 32-bit store so the device never sees DESC with a stale offset; sequentially consistent
    // with the load in hasUsed(), which is the full barrier before the re-check.
    Atomics.store(this.#driverEvent, 0, this.#eventWord(this.#eventMode));
    return this.hasUsed();
  }

  #eventWord(mode: number): number {
    return mode === RING_EVENT_FLAGS_DESC
      ? (mode << 16) | this.#nextUsed | (this.#usedWrap << EVENT_WRAP_SHIFT)
      : mode << 16;
  }
}
