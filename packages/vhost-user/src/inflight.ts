/**
 * Inflight I/O tracking (vhost-user.rst "Inflight I/O tracking", VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD):
 * a shared-memory area the back-end creates (GET_INFLIGHT_FD) and the front-end keeps and hands to
 * each new back-end (SET_INFLIGHT_FD). The back-end records there which descriptor chains it took
 * and has not returned, so that after it crashes or restarts the next one resubmits exactly those:
 * no request is lost, none is completed twice.
 *
 * Both layouts are the ones the document describes, one region per queue, 64-byte aligned. Split
 * rings (as libvhost-user): a 16-byte header, then a 16-byte state per descriptor. Packed rings: a
 * 32-byte header, then a 32-byte state per descriptor that holds a copy of a descriptor taken from
 * the ring: on a packed ring the device writes used descriptors over the slots of chains still in
 * flight, so only the copies can give them back. A region is sized for the larger layout, since the
 * front-end asks for the area before it may have set the features.
 */

import type { QueuePosition, RingLayout } from '@virtkit/core';
import {
  fstat,
  ftruncate,
  LinuxError,
  MAP_SHARED,
  type MemoryMapping,
  memfdCreate,
  mmap,
} from '@virtkit/linux';
import { closeQuietly } from './channel.js';
import {
  INFLIGHT_ALIGNMENT,
  INFLIGHT_PACKED_DESC,
  INFLIGHT_PACKED_HEADER,
  INFLIGHT_SPLIT_DESC,
  INFLIGHT_SPLIT_HEADER,
  INFLIGHT_VERSION,
} from './constants.js';
import { VhostUserError } from './errors.js';

/** Largest inflight area accepted from a front-end (32768 descriptors × 32 bytes × 64 queues). */
const MAX_AREA_BYTES = 128 << 20;

// Header fields of a split queue region.
const H_VERSION = 8;
const H_DESC_NUM = 10;
const H_LAST_BATCH_HEAD = 12;
const H_USED_IDX = 14;
// Fields of one descriptor state.
const D_INFLIGHT = 0;
const D_NEXT = 6;
const D_COUNTER = 8;

const TWO_32 = 0x1_0000_0000;

/** Bytes one queue's record of `queueSize` descriptors takes in `layout` (64-byte aligned). */
export function inflightQueueBytes(queueSize: number, layout: RingLayout = 'split'): number {
  const raw =
    layout === 'split'
      ? INFLIGHT_SPLIT_HEADER + INFLIGHT_SPLIT_DESC * queueSize
      : INFLIGHT_PACKED_HEADER + INFLIGHT_PACKED_DESC * queueSize;
  return Math.ceil(raw / INFLIGHT_ALIGNMENT) * INFLIGHT_ALIGNMENT;
}

/**
 * A mapped inflight area: `numQueues` regions of {@link inflightQueueBytes}(`queueSize`,
 * `'packed'`) bytes, room for either layout.
 *
 * @example
 * ```ts
 * const { area, fd } = InflightArea.create(2, 128); // GET_INFLIGHT_FD: send fd, then close it
 * const tracker = area.queue(0, 128);
 * ```
 */
export class InflightArea {
  readonly numQueues: number;
  readonly queueSize: number;
  readonly #mapping: MemoryMapping;
  readonly #offset: number;
  /** Bytes per queue region. */
  readonly #stride: number;

  private constructor(
    mapping: MemoryMapping,
    offset: number,
    numQueues: number,
    queueSize: number,
    stride: number,
  ) {
    this.#mapping = mapping;
    this.#offset = offset;
    this.numQueues = numQueues;
    this.queueSize = queueSize;
    this.#stride = stride;
  }

  /** Bytes an area for `numQueues` queues of `queueSize` descriptors takes. */
  static bytes(numQueues: number, queueSize: number): number {
    return numQueues * inflightQueueBytes(queueSize, 'packed');
  }

  /**
   * Creates a zeroed area in a new memfd (GET_INFLIGHT_FD). The caller sends `fd` to the
   * front-end and closes it; the area stays mapped here.
   */
  static create(
    numQueues: number,
    queueSize: number,
  ): { area: InflightArea; fd: number; size: number } {
    checkGeometry(numQueues, queueSize);
    const size = InflightArea.bytes(numQueues, queueSize);
    const fd = memfdCreate('virtkit-vhost-inflight');
    try {
      ftruncate(fd, size);
      const mapping = mmap({ fd, length: size, flags: MAP_SHARED });
      return {
        area: new InflightArea(mapping, 0, numQueues, queueSize, size / numQueues),
        fd,
        size,
      };
    } catch (error) {
      closeQuietly(fd);
      throw error;
    }
  }

  /**
   * Maps an area a front-end handed back (SET_INFLIGHT_FD). The descriptor is closed. Throws a
   * {@link VhostUserError} when the geometry does not fit the mapping or the file is too short. An
   * area sized for split records only (an earlier Virtkit's) keeps working for split rings.
   */
  static map(
    fd: number,
    mmapSize: bigint,
    mmapOffset: bigint,
    numQueues: number,
    queueSize: number,
  ): InflightArea {
    try {
      checkGeometry(numQueues, queueSize);
      const packedStride = inflightQueueBytes(queueSize, 'packed');
      const stride =
        mmapSize >= BigInt(numQueues * packedStride)
          ? packedStride
          : inflightQueueBytes(queueSize, 'split');
      const needed = numQueues * stride;
      if (mmapSize < BigInt(needed) || mmapSize > BigInt(MAX_AREA_BYTES)) {
        throw new VhostUserError(
          'VHOST_USER_PROTOCOL',
          `inflight area of ${mmapSize} bytes does not fit ${numQueues} queues of ${queueSize} descriptors (${needed} bytes, at most ${MAX_AREA_BYTES})`,
        );
      }
      if (mmapOffset > BigInt(MAX_AREA_BYTES) || mmapOffset % 8n !== 0n) {
        throw new VhostUserError(
          'VHOST_USER_PROTOCOL',
          `inflight area offset ${mmapOffset} is not an 8-aligned offset below ${MAX_AREA_BYTES}`,
        );
      }
      const offset = Number(mmapOffset);
      const length = offset + Number(mmapSize);
      let stat: ReturnType<typeof fstat>;
      try {
        stat = fstat(fd);
      } catch (error) {
        throw new VhostUserError('VHOST_USER_PROTOCOL', 'cannot stat the inflight descriptor', {
          cause: error,
        });
      }
      if (!stat.isFile || stat.size < length) {
        throw new VhostUserError(
          'VHOST_USER_PROTOCOL',
          `inflight descriptor is not a file of at least ${length} bytes`,
        );
      }
      let mapping: MemoryMapping;
      try {
        mapping = mmap({ fd, length, flags: MAP_SHARED });
      } catch (error) {
        if (!(error instanceof LinuxError)) throw error;
        throw new VhostUserError('VHOST_USER_PROTOCOL', `inflight area: ${error.message}`, {
          cause: error,
        });
      }
      return new InflightArea(mapping, offset, numQueues, queueSize, stride);
    } finally {
      closeQuietly(fd);
    }
  }

  /**
   * The tracker of queue `index` for a split ring of `ringSize` descriptors, or `undefined` when
   * the area has no region for it (fewer queues, or smaller queues, than the ring needs).
   */
  queue(index: number, ringSize: number): SplitInflight | undefined {
    const data = this.#region(index, ringSize, 'split');
    return data && new SplitInflight(data, ringSize);
  }

  /**
   * The tracker of queue `index` for a packed ring of `ringSize` descriptors whose descriptor
   * ring is `ring` (16 × `ringSize` bytes of guest memory), or `undefined` when the area has no
   * region for it.
   */
  packedQueue(index: number, ringSize: number, ring: DataView): PackedInflight | undefined {
    const data = this.#region(index, ringSize, 'packed');
    return data && new PackedInflight(data, ringSize, ring);
  }

  #region(index: number, ringSize: number, layout: RingLayout): DataView | undefined {
    if (index >= this.numQueues || ringSize > this.queueSize) return undefined;
    if (inflightQueueBytes(ringSize, layout) > this.#stride) return undefined;
    return new DataView(this.#mapping.buffer, this.#offset + index * this.#stride, this.#stride);
  }

  /** Unmaps the area. Trackers from {@link queue} must not be used afterwards. */
  unmap(): void {
    this.#mapping.unmap();
  }
}

function checkGeometry(numQueues: number, queueSize: number): void {
  if (!Number.isInteger(numQueues) || numQueues < 1 || numQueues > 1024) {
    throw new VhostUserError(
      'VHOST_USER_PROTOCOL',
      `inflight area for ${numQueues} queues (expected 1 to 1024)`,
    );
  }
  if (!Number.isInteger(queueSize) || queueSize < 1 || queueSize > 32768) {
    throw new VhostUserError(
      'VHOST_USER_PROTOCOL',
      `inflight area for queues of ${queueSize} descriptors (expected 1 to 32768)`,
    );
  }
}

/** What {@link SplitInflight.recover} found. */
export interface InflightRecovery {
  /** Heads the previous back-end took and never returned, oldest first. */
  readonly resubmit: readonly number[];
  /** Where the next available entry is: the used index plus the chains still in flight. */
  readonly nextAvail: number;
  /** False when the region was blank (first use): nothing to recover, trust SET_VRING_BASE. */
  readonly restored: boolean;
}

/**
 * The inflight record of one split ring. Updated as chains are taken (`popped`), returned
 * (`added`) and made visible to the driver (`published`), in the order the document describes
 * so that a crash at any point leaves a record {@link recover} can make consistent.
 */
export class SplitInflight {
  readonly ringSize: number;
  readonly #data: DataView;
  /** Value of the next fetch (orders resubmission); continues after the highest recovered one. */
  #counter = 0;
  /** Heads added to the used ring since the last publish (the batch in progress). */
  readonly #batch: number[] = [];

  constructor(data: DataView, ringSize: number) {
    this.#data = data;
    this.ringSize = ringSize;
  }

  #desc(head: number): number {
    return INFLIGHT_SPLIT_HEADER + head * INFLIGHT_SPLIT_DESC;
  }

  /**
   * Reads the record against the ring's current used index `usedIdx`: completes the bookkeeping
   * of a batch the previous back-end published but did not finish recording, and lists the heads
   * still in flight. A blank region (version 0), one for a ring of another size or a packed
   * ring's record is initialized.
   */
  recover(usedIdx: number): InflightRecovery {
    const data = this.#data;
    const size = this.ringSize;
    if (
      (data.getUint32(P_FEATURES, true) & P_FEATURE_PACKED) !== 0 ||
      data.getUint16(H_VERSION, true) !== INFLIGHT_VERSION ||
      data.getUint16(H_DESC_NUM, true) !== size
    ) {
      new Uint8Array(data.buffer, data.byteOffset, data.byteLength).fill(0);
      data.setUint16(H_DESC_NUM, size, true);
      data.setUint16(H_USED_IDX, usedIdx, true);
      data.setUint16(H_VERSION, INFLIGHT_VERSION, true);
      this.#counter = 0;
      return { resubmit: [], nextAvail: usedIdx, restored: false };
    }
    const recorded = data.getUint16(H_USED_IDX, true);
    if (recorded !== usedIdx) {
      // The last batch reached the used ring but its entries are still marked in flight.
      let batch = (usedIdx - recorded) & 0xffff;
      let head = data.getUint16(H_LAST_BATCH_HEAD, true);
      while (batch-- > 0 && head < size) {
        data.setUint8(this.#desc(head) + D_INFLIGHT, 0);
        head = data.getUint16(this.#desc(head) + D_NEXT, true);
      }
      data.setUint16(H_USED_IDX, usedIdx, true);
    }
    const pending: { head: number; counter: number }[] = [];
    for (let head = 0; head < size; head++) {
      const at = this.#desc(head);
      if (data.getUint8(at + D_INFLIGHT) !== 1) continue;
      const counter =
        data.getUint32(at + D_COUNTER, true) + data.getUint32(at + D_COUNTER + 4, true) * TWO_32;
      pending.push({ head, counter });
    }
    pending.sort((a, b) => a.counter - b.counter);
    this.#counter = pending.length > 0 ? pending[pending.length - 1]!.counter + 1 : 0;
    return {
      resubmit: pending.map((entry) => entry.head),
      nextAvail: (usedIdx + pending.length) & 0xffff,
      restored: true,
    };
  }

  /** The device took chain `head` from the ring. */
  popped(head: number): void {
    const at = this.#desc(head);
    const counter = this.#counter++;
    this.#data.setUint32(at + D_COUNTER, counter >>> 0, true);
    this.#data.setUint32(at + D_COUNTER + 4, Math.floor(counter / TWO_32), true);
    this.#data.setUint8(at + D_INFLIGHT, 1);
  }

  /** The device wrote a used element for `head` (not yet visible to the driver). */
  added(head: number): void {
    const data = this.#data;
    data.setUint16(this.#desc(head) + D_NEXT, data.getUint16(H_LAST_BATCH_HEAD, true), true);
    data.setUint16(H_LAST_BATCH_HEAD, head, true);
    this.#batch.push(head);
  }

  /** True when used elements were added since the last {@link published}. */
  get batchPending(): boolean {
    return this.#batch.length > 0;
  }

  /** The used index `usedIdx` was published: the batch is done. */
  published(usedIdx: number): void {
    const data = this.#data;
    for (const head of this.#batch) data.setUint8(this.#desc(head) + D_INFLIGHT, 0);
    this.#batch.length = 0;
    data.setUint16(H_USED_IDX, usedIdx, true);
  }

  /** Heads marked in flight now (for tests and diagnostics). */
  inflightHeads(): number[] {
    const heads: number[] = [];
    for (let head = 0; head < this.ringSize; head++) {
      if (this.#data.getUint8(this.#desc(head) + D_INFLIGHT) === 1) heads.push(head);
    }
    return heads;
  }
}

// QueueRegionPacked header. `features` (u64 at 0) is 0 in the document; Virtkit sets bit 0 so a
// split record is never read as a packed one (and back).
const P_FEATURES = 0;
const P_FEATURE_PACKED = 1;
const P_FREE_HEAD = 12;
const P_OLD_FREE_HEAD = 14;
const P_USED_IDX = 16;
const P_OLD_USED_IDX = 18;
const P_USED_WRAP = 20;
const P_OLD_USED_WRAP = 21;
/**
 * In the header's padding (Virtkit): the available position after the last chain recorded (slot,
 * wrap counter in bit 15). Recovery derives the position from the chains in flight; this keeps
 * the slots of chains nobody can resubmit (a damaged entry, chains in flight when the record was
 * started) taken, so the ring is never read again where the driver did not write.
 */
const P_AVAIL = 22;
// Fields of one DescStatePacked.
const E_INFLIGHT = 0;
const E_NEXT = 2;
const E_LAST = 4;
const E_NUM = 6;
const E_COUNTER = 8;
const E_ID = 16;
const E_FLAGS = 18;
const E_LEN = 20;
const E_ADDR = 24;
/** Ends the free list (no entry has this index: queues have at most 32768 descriptors). */
const END = 0xffff;

/** One ring descriptor as it was taken (addr, len, id, flags of §2.8.13). */
export interface SavedDescriptor {
  readonly addr: bigint;
  readonly len: number;
  readonly id: number;
  readonly flags: number;
}

/** A chain the previous back-end took from a packed ring and did not return. */
export interface SavedChain {
  /** Its head entry in the record (what {@link PackedInflight.added} is told). */
  readonly entry: number;
  /** Copies of its ring descriptors, in ring order (untrusted: validate before use). */
  readonly descriptors: readonly SavedDescriptor[];
}

/** What {@link PackedInflight.recover} found. */
export interface PackedRecovery {
  /** False when the record was blank or unusable: it was started afresh at the given position. */
  readonly restored: boolean;
  /**
   * Where the ring is: the used slot the driver was last shown, and the available slot after
   * every chain taken (those to resubmit, and any untracked).
   */
  readonly position: QueuePosition;
  /** Chains to resubmit, oldest first. */
  readonly resubmit: readonly SavedChain[];
  /** Parts of the record that could not be used (corrupt), each a sentence. */
  readonly problems: readonly string[];
}

/**
 * The inflight record of one packed ring (vhost-user.rst QueueRegionPacked): a copy of every
 * descriptor of every chain the device has taken and not returned, in `DescStatePacked` entries
 * linked into chains and a free list, plus the used position the driver was last shown.
 *
 * Each change has one commit point, so a crash at any instant leaves a record {@link recover} can
 * make consistent: a chain is recorded by moving `old_free_head` past its entries; a batch of used
 * descriptors is recorded as pending (`free_head`, `used_idx`) before it is made visible and
 * committed (the `old_` fields) after, and recovery tells which happened from the ring itself.
 * The available position is not stored: it is the used position plus the slots of the chains in
 * flight. Only {@link recover} reads the shared record (as untrusted data); the rest of the time the
 * tracker works from its own copy of the links.
 */
export class PackedInflight {
  readonly ringSize: number;
  readonly #data: DataView;
  readonly #ring: DataView;
  /** Bytes 16-23 of the record as one word, for the commit store. */
  readonly #usedWord: BigUint64Array;
  /** The record's links, kept here so a scribbled record cannot derail the device. */
  readonly #next: Uint16Array;
  readonly #last: Uint16Array;
  /** Descriptors (ring slots) of the chain at each head entry. */
  readonly #num: Uint16Array;
  #freeHead = END;
  #freeCount = 0;
  #counter = 0;
  /** Head entries of the chains returned since the last publication. */
  readonly #batch: number[] = [];

  /**
   * `data` is the queue's region of the area; `ring` the descriptor ring in guest memory (read to
   * copy descriptors and, on recovery, to see whether the last batch reached the driver).
   */
  constructor(data: DataView, ringSize: number, ring: DataView) {
    this.#data = data;
    this.ringSize = ringSize;
    this.#ring = ring;
    if ((data.byteOffset + P_USED_IDX) % 8 !== 0) {
      throw new VhostUserError(
        'VHOST_USER_MEMORY',
        `packed inflight record at byte ${data.byteOffset} is not 8-byte aligned`,
      );
    }
    this.#usedWord = new BigUint64Array(data.buffer, data.byteOffset + P_USED_IDX, 1);
    this.#next = new Uint16Array(ringSize);
    this.#last = new Uint16Array(ringSize);
    this.#num = new Uint16Array(ringSize);
  }

  #entry(index: number): number {
    return INFLIGHT_PACKED_HEADER + index * INFLIGHT_PACKED_DESC;
  }

  /**
   * Writes bytes 16-23 (used_idx, old_used_idx, used_wrap_counter, old_used_wrap_counter and the
   * available position kept in the padding) as ONE 8-byte store: a back-end killed at any
   * instruction leaves either all of the old values or all of the new ones. Separate stores could
   * leave an old index with a new wrap counter, which recovery would read as a different ring
   * position.
   */
  #storeUsedWord(used: number, usedWrap: boolean, oldUsed: number, oldWrap: boolean): void {
    const avail = this.#data.getUint16(P_AVAIL, true);
    const word =
      BigInt(used) |
      (BigInt(oldUsed) << 16n) |
      (BigInt(usedWrap ? 1 : 0) << 32n) |
      (BigInt(oldWrap ? 1 : 0) << 40n) |
      (BigInt(avail) << 48n);
    // Little-endian host (x86-64, the only one @virtkit/linux runs on): the word's bytes are
    // the fields in record order.
    Atomics.store(this.#usedWord, 0, word);
  }

  /**
   * Reads the record: finishes or rolls back a batch the previous back-end was publishing, and
   * lists the chains still in flight. A blank record, one for a ring of another size or layout,
   * or one too damaged to trust is started afresh at `start` (the front-end's SET_VRING_BASE).
   */
  recover(start: QueuePosition): PackedRecovery {
    const data = this.#data;
    const size = this.ringSize;
    if (
      (data.getUint32(P_FEATURES, true) & P_FEATURE_PACKED) === 0 ||
      data.getUint16(H_VERSION, true) !== INFLIGHT_VERSION ||
      data.getUint16(H_DESC_NUM, true) !== size
    ) {
      return this.#fresh(start, []);
    }
    const problems: string[] = [];
    let freeHead = data.getUint16(P_OLD_FREE_HEAD, true);
    let used = data.getUint16(P_OLD_USED_IDX, true);
    let usedWrap = data.getUint8(P_OLD_USED_WRAP) !== 0;
    const availWord = data.getUint16(P_AVAIL, true);
    const pendingUsed = data.getUint16(P_USED_IDX, true);
    const pendingWrap = data.getUint8(P_USED_WRAP) !== 0;
    if (used >= size || pendingUsed >= size || (availWord & 0x7fff) >= size) {
      return this.#fresh(start, [
        `inflight record: used position ${used} (pending ${pendingUsed}) or available position ${availWord & 0x7fff} is not a slot of a ${size}-entry ring; the record is started afresh`,
      ]);
    }
    if (pendingUsed !== used || pendingWrap !== usedWrap) {
      // A batch was being published. If the driver can see it (the first used descriptor's flags
      // are written: AVAIL = USED = the wrap counter), it happened; otherwise it did not.
      const flags = this.#ring.getUint16(16 * used + 14, true);
      const wrap = usedWrap ? 1 : 0;
      if (((flags >>> 7) & 1) === wrap && flags >>> 15 === wrap) {
        freeHead = data.getUint16(P_FREE_HEAD, true);
        used = pendingUsed;
        usedWrap = pendingWrap;
      }
    }

    // Entries on the free list are free, whatever their inflight flag says (a chain being
    // recorded when the back-end stopped is not recorded).
    const free = new Uint8Array(size);
    for (
      let entry = freeHead, steps = 0;
      entry < size && free[entry] === 0 && steps < size;
      steps++
    ) {
      free[entry] = 1;
      entry = data.getUint16(this.#entry(entry) + E_NEXT, true);
    }
    const heads: { entry: number; counter: number }[] = [];
    for (let entry = 0; entry < size; entry++) {
      const at = this.#entry(entry);
      if (free[entry] === 1 || data.getUint8(at + E_INFLIGHT) !== 1) continue;
      const counter =
        data.getUint32(at + E_COUNTER, true) + data.getUint32(at + E_COUNTER + 4, true) * TWO_32;
      heads.push({ entry, counter });
    }
    heads.sort((a, b) => a.counter - b.counter || a.entry - b.entry);

    // Walk each chain; entries claimed twice, links out of range or a wrong length are damage.
    const claimed = new Uint8Array(size);
    const chains: { entry: number; entries: number[] }[] = [];
    let slots = 0;
    for (const { entry: head } of heads) {
      const at = this.#entry(head);
      const num = data.getUint16(at + E_NUM, true);
      const entries: number[] = [];
      let entry = head;
      let damage: string | undefined;
      if (num < 1 || num > size) damage = `has ${num} descriptors`;
      while (damage === undefined && entries.length < num) {
        if (entry >= size || free[entry] === 1 || claimed[entry] === 1) {
          damage = `links to entry ${entry}, which is free, taken or not in the record`;
          break;
        }
        claimed[entry] = 1;
        entries.push(entry);
        if (entries.length < num) entry = data.getUint16(this.#entry(entry) + E_NEXT, true);
      }
      if (damage === undefined && data.getUint16(at + E_LAST, true) !== entry) {
        damage = `ends at entry ${entry}, not at its recorded last entry`;
      }
      if (damage === undefined && slots + num > size) {
        damage = `needs ${num} ring slots beyond the ${size - slots} left`;
      }
      if (damage !== undefined) {
        for (const taken of entries) claimed[taken] = 0;
        problems.push(`inflight record: the chain at entry ${head} ${damage}; it is dropped`);
        continue;
      }
      slots += num;
      chains.push({ entry: head, entries });
    }

    // The record is rewritten clean: the chains kept, every other entry on a new free list.
    const resubmit: SavedChain[] = [];
    for (const { entry: head, entries } of chains) {
      resubmit.push({ entry: head, descriptors: entries.map((entry) => this.#saved(entry)) });
      for (let i = 0; i < entries.length - 1; i++) this.#next[entries[i]!] = entries[i + 1]!;
      this.#last[head] = entries[entries.length - 1]!;
      this.#num[head] = entries.length;
    }
    const last = heads.length > 0 ? heads[heads.length - 1]!.counter : -1;
    this.#counter = Number.isSafeInteger(last + 1) ? last + 1 : 0;
    this.#rebuildFreeList(claimed);
    this.#writeUsed(used, usedWrap);

    // The slots of chains in flight, or more if the recorded position says so (see P_AVAIL).
    let recorded = ringDistance(
      availWord & 0x7fff,
      (availWord & 0x8000) !== 0,
      used,
      usedWrap,
      size,
    );
    if (recorded > size) {
      problems.push(
        `inflight record: available position ${availWord & 0x7fff} is behind the used position ${used}; it is ignored`,
      );
      recorded = 0;
    }
    let nextAvail = used + Math.max(slots, recorded);
    let availWrap = usedWrap;
    if (nextAvail >= size) {
      nextAvail -= size;
      availWrap = !availWrap;
    }
    this.#setAvail(nextAvail, availWrap);
    return {
      restored: true,
      position: { nextAvail, availWrap, nextUsed: used, usedWrap },
      resubmit,
      problems,
    };
  }

  /**
   * Starts the record afresh at `start` (chains in flight there stay taken, unknown: nobody
   * recorded them).
   */
  #fresh(start: QueuePosition, problems: string[]): PackedRecovery {
    const data = this.#data;
    const size = this.ringSize;
    new Uint8Array(data.buffer, data.byteOffset, data.byteLength).fill(0);
    const usedWrap = start.usedWrap !== false;
    const availWrap = start.availWrap !== false;
    const valid = (slot: number) => Number.isInteger(slot) && slot >= 0 && slot < size;
    const used = valid(start.nextUsed) ? start.nextUsed : 0;
    const sound =
      valid(start.nextAvail) &&
      ringDistance(start.nextAvail, availWrap, used, usedWrap, size) <= size;
    data.setUint16(H_DESC_NUM, size, true);
    this.#counter = 0;
    this.#rebuildFreeList(new Uint8Array(size));
    this.#writeUsed(used, usedWrap);
    if (sound) this.#setAvail(start.nextAvail, availWrap);
    else this.#setAvail(used, usedWrap);
    data.setUint32(P_FEATURES, P_FEATURE_PACKED, true);
    data.setUint16(H_VERSION, INFLIGHT_VERSION, true);
    return { restored: false, position: start, resubmit: [], problems };
  }

  /** Links every entry not `claimed` into the free list, highest first (see below). */
  #rebuildFreeList(claimed: Uint8Array): void {
    const data = this.#data;
    // From the top down, so that a link written always points at an entry already relinked: a
    // back-end stopped half-way leaves a free list that still only holds free entries.
    let head = END;
    let count = 0;
    for (let entry = this.ringSize - 1; entry >= 0; entry--) {
      if (claimed[entry] === 1) continue;
      const at = this.#entry(entry);
      data.setUint8(at + E_INFLIGHT, 0);
      data.setUint16(at + E_NEXT, head, true);
      this.#next[entry] = head;
      head = entry;
      count++;
    }
    this.#freeHead = head;
    this.#freeCount = count;
    data.setUint16(P_FREE_HEAD, head, true);
    data.setUint16(P_OLD_FREE_HEAD, head, true);
  }

  #writeUsed(used: number, usedWrap: boolean): void {
    this.#storeUsedWord(used, usedWrap, used, usedWrap);
  }

  #setAvail(slot: number, wrap: boolean): void {
    this.#availSlot = slot;
    this.#availWrap = wrap;
    this.#data.setUint16(P_AVAIL, slot | (wrap ? 0x8000 : 0), true);
  }
  #availSlot = 0;
  #availWrap = true;

  #saved(entry: number): SavedDescriptor {
    const data = this.#data;
    const at = this.#entry(entry);
    return {
      addr: data.getBigUint64(at + E_ADDR, true),
      len: data.getUint32(at + E_LEN, true),
      id: data.getUint16(at + E_ID, true),
      flags: data.getUint16(at + E_FLAGS, true),
    };
  }

  /**
   * The device took the next chain from the ring, `count` descriptors (ring slots) from the
   * available position: copies them into free entries and records the chain. Returns its head
   * entry, or -1 if the record has no room (it cannot happen while the ring and the record agree;
   * the chain's slots are still counted as taken, and it cannot be resubmitted).
   */
  popped(count: number): number {
    const size = this.ringSize;
    const slot = this.#availSlot;
    if (count < 1 || count > this.#freeCount || count > size) {
      this.#advanceAvail(Math.min(Math.max(count, 0), size));
      return -1;
    }
    const data = this.#data;
    const ring = this.#ring;
    const head = this.#freeHead;
    let entry = head;
    for (let i = 0; i < count; i++) {
      const from = 16 * ((slot + i) % size);
      const at = this.#entry(entry);
      data.setUint8(at + E_INFLIGHT, 0);
      data.setBigUint64(at + E_ADDR, ring.getBigUint64(from, true), true);
      data.setUint32(at + E_LEN, ring.getUint32(from + 8, true), true);
      data.setUint16(at + E_ID, ring.getUint16(from + 12, true), true);
      data.setUint16(at + E_FLAGS, ring.getUint16(from + 14, true), true);
      if (i < count - 1) entry = this.#next[entry]!;
    }
    const at = this.#entry(head);
    const counter = this.#counter++;
    data.setUint16(at + E_LAST, entry, true);
    data.setUint16(at + E_NUM, count, true);
    data.setUint32(at + E_COUNTER, counter >>> 0, true);
    data.setUint32(at + E_COUNTER + 4, Math.floor(counter / TWO_32), true);
    data.setUint8(at + E_INFLIGHT, 1);
    this.#last[head] = entry;
    this.#num[head] = count;
    this.#freeHead = this.#next[entry]!;
    this.#freeCount -= count;
    data.setUint16(P_FREE_HEAD, this.#freeHead, true);
    // The commit point: past this store the chain is in flight.
    data.setUint16(P_OLD_FREE_HEAD, this.#freeHead, true);
    this.#advanceAvail(count);
    return head;
  }

  #advanceAvail(slots: number): void {
    const next = this.#availSlot + slots;
    if (next >= this.ringSize) this.#setAvail(next - this.ringSize, !this.#availWrap);
    else this.#setAvail(next, this.#availWrap);
  }

  /** The device wrote a used descriptor for the chain at `entry` (not yet visible). */
  added(entry: number): void {
    if (entry >= 0 && entry < this.ringSize) this.#batch.push(entry);
  }

  /** True when used descriptors were added since the last {@link published}. */
  get batchPending(): boolean {
    return this.#batch.length > 0;
  }

  /**
   * Call right before the batch is made visible, with the used position after it: records the
   * batch as pending (its entries back on the free list, the new used position).
   */
  publishing(nextUsed: number, usedWrap: boolean): void {
    const data = this.#data;
    for (const head of this.#batch) {
      const last = this.#last[head]!;
      this.#next[last] = this.#freeHead;
      data.setUint16(this.#entry(last) + E_NEXT, this.#freeHead, true);
      this.#freeHead = head;
      this.#freeCount += this.#num[head]!;
    }
    this.#pendingUsed = nextUsed;
    this.#pendingWrap = usedWrap;
    data.setUint16(P_FREE_HEAD, this.#freeHead, true);
    data.setUint8(P_USED_WRAP, usedWrap ? 1 : 0);
    data.setUint16(P_USED_IDX, nextUsed, true);
  }
  #pendingUsed = 0;
  #pendingWrap = true;

  /** Call right after the batch was made visible: commits it. */
  published(): void {
    const data = this.#data;
    for (const head of this.#batch) data.setUint8(this.#entry(head) + E_INFLIGHT, 0);
    this.#batch.length = 0;
    data.setUint16(P_OLD_FREE_HEAD, this.#freeHead, true);
    // Last, and in one store: until the old fields match the pending ones, recovery looks at the
    // ring to decide whether the batch reached the driver.
    this.#storeUsedWord(this.#pendingUsed, this.#pendingWrap, this.#pendingUsed, this.#pendingWrap);
  }

  /** Head entries of the chains in flight now, oldest first (for tests and diagnostics). */
  inflightEntries(): number[] {
    const heads: { entry: number; counter: number }[] = [];
    for (let entry = 0; entry < this.ringSize; entry++) {
      const at = this.#entry(entry);
      if (this.#data.getUint8(at + E_INFLIGHT) !== 1) continue;
      heads.push({ entry, counter: this.#data.getUint32(at + E_COUNTER, true) });
    }
    return heads.sort((a, b) => a.counter - b.counter).map((head) => head.entry);
  }
}

/**
 * Slots from the used position to the available one (0 to `size` for a sound pair; more when the
 * available position is behind).
 */
function ringDistance(
  avail: number,
  availWrap: boolean,
  used: number,
  usedWrap: boolean,
  size: number,
): number {
  const distance = availWrap === usedWrap ? avail - used : avail + size - used;
  return distance < 0 ? distance + 2 * size : distance;
}
