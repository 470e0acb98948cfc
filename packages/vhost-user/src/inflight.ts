/**
 * Inflight I/O tracking (vhost-user.rst "Inflight I/O tracking", VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD):
 * a shared-memory area the back-end creates (GET_INFLIGHT_FD) and the front-end keeps and hands to
 * each new back-end (SET_INFLIGHT_FD). The back-end records there which descriptor chains it took
 * and has not returned, so that after it crashes or restarts the next one resubmits exactly those:
 * no request is lost, none is completed twice.
 *
 * The split-ring layout is the one the document describes and libvhost-user uses (one region per
 * queue, 64-byte aligned: a 16-byte header, then a 16-byte state per descriptor). For packed rings
 * only the ring positions are kept (a Virtkit layout in the same region; the area's contents are
 * private to back-ends): a restarted back-end resumes where the last one stopped, but chains in
 * flight at a crash are not resubmitted (see the README's limits).
 */

import type { QueuePosition } from '@virtkit/core';
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
  INFLIGHT_SPLIT_DESC,
  INFLIGHT_SPLIT_HEADER,
  INFLIGHT_VERSION,
} from './constants.js';
import { VhostUserError } from './errors.js';

/** Largest inflight area accepted from a front-end (32768 descriptors × 16 bytes × 64 queues). */
const MAX_AREA_BYTES = 64 << 20;

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

/** Bytes of one queue's region for `queueSize` descriptors (split layout, 64-byte aligned). */
export function inflightQueueBytes(queueSize: number): number {
  const raw = INFLIGHT_SPLIT_HEADER + INFLIGHT_SPLIT_DESC * queueSize;
  return Math.ceil(raw / INFLIGHT_ALIGNMENT) * INFLIGHT_ALIGNMENT;
}

/**
 * A mapped inflight area: `numQueues` regions of {@link inflightQueueBytes}(`queueSize`) bytes.
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

  private constructor(
    mapping: MemoryMapping,
    offset: number,
    numQueues: number,
    queueSize: number,
  ) {
    this.#mapping = mapping;
    this.#offset = offset;
    this.numQueues = numQueues;
    this.queueSize = queueSize;
  }

  /** Bytes an area for `numQueues` queues of `queueSize` descriptors takes. */
  static bytes(numQueues: number, queueSize: number): number {
    return numQueues * inflightQueueBytes(queueSize);
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
      return { area: new InflightArea(mapping, 0, numQueues, queueSize), fd, size };
    } catch (error) {
      closeQuietly(fd);
      throw error;
    }
  }

  /**
   * Maps an area a front-end handed back (SET_INFLIGHT_FD). The descriptor is closed. Throws a
   * {@link VhostUserError} when the geometry does not fit the mapping or the file is too short.
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
      const needed = InflightArea.bytes(numQueues, queueSize);
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
      return new InflightArea(mapping, offset, numQueues, queueSize);
    } finally {
      closeQuietly(fd);
    }
  }

  /**
   * The tracker of queue `index` for a split ring of `ringSize` descriptors, or `undefined` when
   * the area has no region for it (fewer queues, or smaller queues, than the ring needs).
   */
  queue(index: number, ringSize: number): SplitInflight | undefined {
    const data = this.#region(index, ringSize);
    return data && new SplitInflight(data, ringSize);
  }

  /** The position record of queue `index` for a packed ring of `ringSize` descriptors. */
  packedQueue(index: number, ringSize: number): PackedInflight | undefined {
    const data = this.#region(index, ringSize);
    return data && new PackedInflight(data, ringSize);
  }

  #region(index: number, ringSize: number): DataView | undefined {
    if (index >= this.numQueues || ringSize > this.queueSize) return undefined;
    const bytes = inflightQueueBytes(this.queueSize);
    return new DataView(this.#mapping.buffer, this.#offset + index * bytes, bytes);
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

// Packed position record (Virtkit layout): version and desc_num where the split header has them.
const P_AVAIL = 12;
const P_USED = 14;
const P_IN_FLIGHT = 16;
/** Marks a packed record, so a split record is never read as one (and back). */
const PACKED_MARK = 0x8000;

/** What {@link PackedInflight.recover} found. */
export interface PackedRecovery {
  /** Where the last back-end was: next available slot and used slot, with wrap counters. */
  readonly position: QueuePosition;
  /** Chains it had taken and not returned (they cannot be resubmitted on a packed ring). */
  readonly lost: number;
}

/**
 * The position record of one packed ring: where the device is in the ring after each change, so
 * a back-end restarted after a crash resumes there. (The front-end cannot tell it: QEMU keeps no
 * position of its own for packed rings.)
 */
export class PackedInflight {
  readonly ringSize: number;
  readonly #data: DataView;

  constructor(data: DataView, ringSize: number) {
    this.#data = data;
    this.ringSize = ringSize;
  }

  /**
   * The recorded position, or `undefined` for a blank record (first use: it is initialized, and
   * the front-end's SET_VRING_BASE is right).
   */
  recover(): PackedRecovery | undefined {
    const data = this.#data;
    const size = this.ringSize;
    if (
      data.getUint16(H_VERSION, true) !== (INFLIGHT_VERSION | PACKED_MARK) ||
      data.getUint16(H_DESC_NUM, true) !== size
    ) {
      new Uint8Array(data.buffer, data.byteOffset, Math.min(data.byteLength, 64)).fill(0);
      data.setUint16(H_DESC_NUM, size, true);
      data.setUint16(P_AVAIL, 0x8000, true);
      data.setUint16(P_USED, 0x8000, true);
      data.setUint16(H_VERSION, INFLIGHT_VERSION | PACKED_MARK, true);
      return undefined;
    }
    const avail = data.getUint16(P_AVAIL, true);
    const used = data.getUint16(P_USED, true);
    const position = {
      nextAvail: avail & 0x7fff,
      availWrap: (avail & 0x8000) !== 0,
      nextUsed: used & 0x7fff,
      usedWrap: (used & 0x8000) !== 0,
    };
    if (position.nextAvail >= size || position.nextUsed >= size) return undefined;
    return { position, lost: data.getUint16(P_IN_FLIGHT, true) };
  }

  /** Records the device's position and how many chains it holds. */
  record(position: QueuePosition, inFlight: number): void {
    const data = this.#data;
    data.setUint16(
      P_AVAIL,
      (position.nextAvail & 0x7fff) | (position.availWrap === false ? 0 : 0x8000),
      true,
    );
    data.setUint16(
      P_USED,
      (position.nextUsed & 0x7fff) | (position.usedWrap === false ? 0 : 0x8000),
      true,
    );
    data.setUint16(P_IN_FLIGHT, inFlight, true);
  }
}
