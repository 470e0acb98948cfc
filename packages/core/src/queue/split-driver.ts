/**
 * The driver side of a split virtqueue (virtio 1.2 §2.7), modelled on Linux
 * drivers/virtio/virtio_ring.c: for the test harness and for userspace drivers.
 *
 * The driver keeps its own record of every chain it made available (descriptor count, writable
 * length, token) and never trusts what the device wrote beyond the used element it reads, so a
 * buggy device is caught (a `DRIVER` error) instead of corrupting the driver's free list.
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
import { formatAddress, QueueConfigError, VirtkitError } from '../errors.js';
import type { GuestMemory, GuestRegion } from '../memory.js';
import type { Segment } from './chain.js';
import {
  checkDriverSegment,
  isValidSplitQueueSize,
  regionUint16Array,
  regionUint32Array,
  type SplitRingBytes,
  splitRingBytes,
  vringNeedEvent,
} from './ring-util.js';
import type { DriverQueue, DriverQueueOptions, RingLayout, UsedBuffer } from './types.js';

/** Options of {@link SplitDriverQueue}: the common driver options plus a starting index. */
export interface SplitDriverQueueOptions extends DriverQueueOptions {
  /**
   * Start the free-running avail and used indices here instead of 0, as if the ring had already
   * been used this many times (both indices are written to the rings). For wrap-around tests and
   * for matching a device started from a {@link QueuePosition}.
   */
  readonly startIndex?: number;
}

interface IndirectTable {
  readonly address: number;
  /** Descriptors it has room for. */
  readonly capacity: number;
}

const NO_TABLE = -1;

/**
 * Driver side of a split virtqueue. Allocates its rings (and indirect tables, kept in a pool for
 * reuse) with `options.allocate`, adds buffers, publishes them and collects used buffers.
 *
 * @example
 * ```ts
 * const queue = new SplitDriverQueue<string>(memory, {
 *   index: 0, size: 256, eventIdx: true, indirect: true, allocate: (n, a) => allocator.allocate(n, a),
 * });
 * queue.add([{ addr: request, len: 16 }], [{ addr: reply, len: 512 }], 'first');
 * if (queue.publish()) notifyDevice(0);
 * // … later, on an interrupt:
 * for (let used = queue.takeUsed(); used; used = queue.takeUsed()) console.log(used.token, used.len);
 * ```
 */
export class SplitDriverQueue<T = unknown> implements DriverQueue<T> {
  /** Queue index on its device. */
  readonly index: number;
  /** Queue size (ring entries). */
  readonly size: number;
  /** Ring layout. */
  readonly layout: RingLayout = 'split';
  /** Guest address of the descriptor table. */
  readonly descAddr: number;
  /** Guest address of the available ring (the "driver area"). */
  readonly driverAddr: number;
  /** Guest address of the used ring (the "device area"). */
  readonly deviceAddr: number;

  readonly #memory: GuestMemory;
  readonly #allocate: (size: number, align: number) => number;
  readonly #eventIdx: boolean;
  readonly #indirect: boolean;
  readonly #mask: number;
  readonly #desc: Uint32Array;
  readonly #avail: Uint16Array;
  readonly #used16: Uint16Array;
  readonly #used32: Uint32Array;
  readonly #usedEventSlot: number;
  readonly #availEventSlot: number;

  /** The driver's own copy of each descriptor's `next` link: free list and chains. */
  readonly #next: Uint16Array;
  #freeHead = 0;
  #freeCount: number;
  /** Per head: descriptors the chain uses (0 = not in use). */
  readonly #chainLength: Uint16Array;
  /** Per head: writable bytes of the chain (can exceed 2^32 only for invalid input, rejected). */
  readonly #writableLength: Float64Array;
  /** Per head: index into #tables of its indirect table, or NO_TABLE. */
  readonly #tableOf: Int32Array;
  readonly #tokens: (T | undefined)[];
  readonly #tables: IndirectTable[] = [];
  /** Indices into #tables of tables not in use. */
  readonly #freeTables: number[] = [];

  #availIdx: number;
  #publishedAvail: number;
  #lastUsed: number;
  #interruptsDisabled = false;
  #inFlight = 0;

  constructor(memory: GuestMemory, options: SplitDriverQueueOptions) {
    const { size, index } = options;
    if (!isValidSplitQueueSize(size)) {
      throw new QueueConfigError(
        `queue ${index}: size ${size} is not a power of two between 1 and ${MAX_QUEUE_SIZE}`,
      );
    }
    const start = options.startIndex ?? 0;
    if (!Number.isInteger(start) || start < 0 || start > 0xffff) {
      throw new QueueConfigError(`queue ${index}: start index ${start} is not a 16-bit index`);
    }
    const bytes = SplitDriverQueue.ringBytes(size);
    this.index = index;
    this.size = size;
    this.#memory = memory;
    this.#allocate = options.allocate;
    this.#eventIdx = options.eventIdx;
    this.#indirect = options.indirect;
    this.#mask = size - 1;
    this.descAddr = options.allocate(bytes.desc, SPLIT_ALIGN_DESC);
    this.driverAddr = options.allocate(bytes.avail, SPLIT_ALIGN_AVAIL);
    this.deviceAddr = options.allocate(bytes.used, SPLIT_ALIGN_USED);
    this.#desc = ringArray(memory, this.descAddr, bytes.desc, SPLIT_ALIGN_DESC, regionUint32Array);
    this.#avail = ringArray(
      memory,
      this.driverAddr,
      bytes.avail,
      SPLIT_ALIGN_AVAIL,
      regionUint16Array,
    );
    this.#used16 = ringArray(
      memory,
      this.deviceAddr,
      bytes.used,
      SPLIT_ALIGN_USED,
      regionUint16Array,
    );
    this.#used32 = ringArray(
      memory,
      this.deviceAddr,
      bytes.used,
      SPLIT_ALIGN_USED,
      regionUint32Array,
    );
    this.#usedEventSlot = 2 + size;
    this.#availEventSlot = 2 + 4 * size;
    // The allocator may hand out recycled memory: a ring must start zeroed (§2.7.13.1 driver init).
    this.#desc.fill(0);
    this.#avail.fill(0);
    this.#used16.fill(0);
    this.#avail[1] = start;
    this.#used16[1] = start;
    if (this.#eventIdx) {
      this.#avail[this.#usedEventSlot] = start;
      this.#used16[this.#availEventSlot] = start;
    }

    this.#next = new Uint16Array(size);
    for (let i = 0; i < size; i++) this.#next[i] = i + 1;
    this.#freeCount = size;
    this.#chainLength = new Uint16Array(size);
    this.#writableLength = new Float64Array(size);
    this.#tableOf = new Int32Array(size).fill(NO_TABLE);
    this.#tokens = new Array<T | undefined>(size).fill(undefined);
    this.#availIdx = start;
    this.#publishedAvail = start;
    this.#lastUsed = start;
  }

  /** Byte sizes of the descriptor table, available ring and used ring for `size` entries. */
  static ringBytes(size: number): SplitRingBytes {
    return splitRingBytes(size);
  }

  /** Descriptors free for new buffers. */
  get freeDescriptors(): number {
    return this.#freeCount;
  }

  /** Buffers added and not yet taken back with {@link takeUsed}. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * Adds a buffer of device-readable then device-writable segments, to be made visible by
   * {@link publish}. Uses one indirect table when VIRTIO_F_INDIRECT_DESC was negotiated and the
   * buffer has more than one segment. Returns false when there are not enough free descriptors.
   *
   * @throws VirtkitError (`DRIVER`) for a buffer with no segments, a segment that is not a
   * non-negative safe address with a u32 length, or more segments than a chain may ever have.
   */
  add(readable: readonly Segment[], writable: readonly Segment[], token: T): boolean {
    const total = readable.length + writable.length;
    if (total === 0) throw new VirtkitError('DRIVER', 'a buffer needs at least one segment');
    let writableLength = 0;
    for (const segment of readable) checkDriverSegment(segment);
    for (const segment of writable) writableLength += checkDriverSegment(segment);
    const useIndirect = this.#indirect && total > 1;
    const limit = useIndirect ? MAX_QUEUE_SIZE : this.size;
    if (total > limit) {
      throw new VirtkitError(
        'DRIVER',
        `a buffer of ${total} segments is longer than ${useIndirect ? 'an indirect table' : `queue size ${this.size}`} allows`,
      );
    }
    const needed = useIndirect ? 1 : total;
    if (this.#freeCount < needed) return false;

    const head = this.#freeHead;
    if (useIndirect) {
      const tableIndex = this.#takeTable(total);
      const table = this.#tables[tableIndex]!;
      let entry = 0;
      for (const segment of readable) {
        this.#writeIndirect(
          table.address,
          entry,
          segment,
          entry + 1 < total ? VIRTQ_DESC_F_NEXT : 0,
        );
        entry++;
      }
      for (const segment of writable) {
        const next = entry + 1 < total ? VIRTQ_DESC_F_NEXT : 0;
        this.#writeIndirect(table.address, entry, segment, VIRTQ_DESC_F_WRITE | next);
        entry++;
      }
      this.#writeDesc(head, table.address, total * DESCRIPTOR_SIZE, VIRTQ_DESC_F_INDIRECT, 0);
      this.#freeHead = this.#next[head]!;
      this.#tableOf[head] = tableIndex;
    } else {
      let current = head;
      let written = 0;
      for (let i = 0; i < total; i++) {
        const isWritable = i >= readable.length;
        const segment = isWritable ? writable[i - readable.length]! : readable[i]!;
        const next = this.#next[current]!;
        const last = ++written === total;
        const flags = (isWritable ? VIRTQ_DESC_F_WRITE : 0) | (last ? 0 : VIRTQ_DESC_F_NEXT);
        this.#writeDesc(current, segment.addr, segment.len, flags, last ? 0 : next);
        if (!last) current = next;
      }
      this.#freeHead = this.#next[current]!;
    }
    this.#freeCount -= needed;
    this.#chainLength[head] = needed;
    this.#writableLength[head] = writableLength;
    this.#tokens[head] = token;
    this.#avail[2 + (this.#availIdx & this.#mask)] = head;
    this.#availIdx = (this.#availIdx + 1) & 0xffff;
    this.#inFlight++;
    return true;
  }

  /**
   * Makes the buffers added since the last call visible (a release store of avail.idx) and returns
   * true if the device wants a notification: with EVENT_IDX when avail.idx moved past
   * avail_event, otherwise unless the device set VIRTQ_USED_F_NO_NOTIFY (§2.7.10). Returns false
   * when nothing was added.
   */
  publish(): boolean {
    const newIdx = this.#availIdx;
    const oldIdx = this.#publishedAvail;
    if (newIdx === oldIdx) return false;
    Atomics.store(this.#avail, 1, newIdx);
    this.#publishedAvail = newIdx;
    if (this.#eventIdx) {
      return vringNeedEvent(Atomics.load(this.#used16, this.#availEventSlot), newIdx, oldIdx);
    }
    return (Atomics.load(this.#used16, 0) & VIRTQ_USED_F_NO_NOTIFY) === 0;
  }

  /**
   * The next buffer the device returned, or `null`. Its descriptors go back to the free list.
   *
   * @throws VirtkitError (`DRIVER`) when the device misbehaved: it moved used.idx more than the
   * queue size ahead, returned a descriptor that was not in use, or reported more bytes written
   * than the buffer's writable segments hold.
   */
  takeUsed(): UsedBuffer<T> | null {
    const lastUsed = this.#lastUsed;
    const usedIdx = Atomics.load(this.#used16, 1);
    if (usedIdx === lastUsed) return null;
    if (((usedIdx - lastUsed) & 0xffff) > this.size) {
      throw new VirtkitError(
        'DRIVER',
        `queue ${this.index}: device moved the used index from ${lastUsed} to ${usedIdx}, more than queue size ${this.size} ahead`,
      );
    }
    const slot = 1 + 2 * (lastUsed & this.#mask);
    const id = this.#used32[slot]!;
    const len = this.#used32[slot + 1]!;
    if (id >= this.size || this.#chainLength[id] === 0) {
      throw new VirtkitError(
        'DRIVER',
        `queue ${this.index}: device returned descriptor ${id}, which is not the head of a buffer in use`,
      );
    }
    if (len > this.#writableLength[id]!) {
      throw new VirtkitError(
        'DRIVER',
        `queue ${this.index}: device reports ${len} bytes written to buffer ${id}, which has ${this.#writableLength[id]} writable bytes`,
      );
    }
    const token = this.#tokens[id] as T;
    this.#release(id);
    this.#lastUsed = (lastUsed + 1) & 0xffff;
    // As Linux virtqueue_get_buf_ctx_split: with interrupts on, ask for the next one.
    if (this.#eventIdx && !this.#interruptsDisabled) {
      Atomics.store(this.#avail, this.#usedEventSlot, this.#lastUsed);
    }
    return { token, len };
  }

  /**
   * Asks the device not to interrupt: sets VIRTQ_AVAIL_F_NO_INTERRUPT, or with EVENT_IDX moves
   * used_event just behind the last used entry, the farthest point the device could reach.
   */
  disableInterrupts(): void {
    this.#interruptsDisabled = true;
    if (this.#eventIdx) {
      Atomics.store(this.#avail, this.#usedEventSlot, (this.#lastUsed - 1) & 0xffff);
    } else {
      Atomics.store(this.#avail, 0, VIRTQ_AVAIL_F_NO_INTERRUPT);
    }
  }

  /**
   * Asks the device to interrupt for the next used buffer (clears VIRTQ_AVAIL_F_NO_INTERRUPT, or
   * sets used_event to the next entry), then re-checks: true if used buffers are already pending,
   * in which case no interrupt may come for them.
   */
  enableInterrupts(): boolean {
    this.#interruptsDisabled = false;
    if (this.#eventIdx) {
      Atomics.store(this.#avail, this.#usedEventSlot, this.#lastUsed);
    } else {
      Atomics.store(this.#avail, 0, 0);
    }
    return Atomics.load(this.#used16, 1) !== this.#lastUsed;
  }

  #release(head: number): void {
    const count = this.#chainLength[head]!;
    let last = head;
    for (let i = 1; i < count; i++) last = this.#next[last]!;
    this.#next[last] = this.#freeHead;
    this.#freeHead = head;
    this.#freeCount += count;
    this.#chainLength[head] = 0;
    this.#tokens[head] = undefined;
    const table = this.#tableOf[head]!;
    if (table !== NO_TABLE) {
      this.#freeTables.push(table);
      this.#tableOf[head] = NO_TABLE;
    }
    this.#inFlight--;
  }

  /** A free indirect table with room for `entries` descriptors, allocating one if none fits. */
  #takeTable(entries: number): number {
    let best = -1;
    for (let i = 0; i < this.#freeTables.length; i++) {
      const capacity = this.#tables[this.#freeTables[i]!]!.capacity;
      if (
        capacity >= entries &&
        (best < 0 || capacity < this.#tables[this.#freeTables[best]!]!.capacity)
      ) {
        best = i;
      }
    }
    if (best >= 0) {
      const index = this.#freeTables[best]!;
      this.#freeTables[best] = this.#freeTables[this.#freeTables.length - 1]!;
      this.#freeTables.pop();
      return index;
    }
    // Round up so tables of similar sizes are interchangeable in the pool.
    let capacity = 4;
    while (capacity < entries) capacity *= 2;
    const address = this.#allocate(capacity * DESCRIPTOR_SIZE, SPLIT_ALIGN_DESC);
    this.#tables.push({ address, capacity });
    return this.#tables.length - 1;
  }

  #writeDesc(index: number, addr: number, len: number, flags: number, next: number): void {
    const word = index << 2;
    this.#desc[word] = addr % 0x1_0000_0000;
    this.#desc[word + 1] = Math.floor(addr / 0x1_0000_0000);
    this.#desc[word + 2] = len;
    this.#desc[word + 3] = flags | (next << 16);
  }

  #writeIndirect(table: number, entry: number, segment: Segment, flags: number): void {
    const at = table + entry * DESCRIPTOR_SIZE;
    const memory = this.#memory;
    memory.writeU32(at, segment.addr % 0x1_0000_0000);
    memory.writeU32(at + 4, Math.floor(segment.addr / 0x1_0000_0000));
    memory.writeU32(at + 8, segment.len);
    // Entries are laid out in order, so entry i links to i + 1.
    memory.writeU32(at + 12, flags | ((flags & VIRTQ_DESC_F_NEXT ? entry + 1 : 0) << 16));
  }
}

/** A typed array over a ring part the allocator returned, after checking it. */
function ringArray<A>(
  memory: GuestMemory,
  address: number,
  bytes: number,
  align: number,
  make: (region: GuestRegion, address: number, bytes: number) => A | undefined,
): A {
  const region = address % align === 0 ? memory.findRegion(address, bytes) : undefined;
  const array = region ? make(region, address, bytes) : undefined;
  if (array === undefined) {
    throw new QueueConfigError(
      `allocator returned ${formatAddress(address)} for ${bytes} ring bytes: not ${align}-byte aligned inside one guest memory region`,
    );
  }
  return array;
}
