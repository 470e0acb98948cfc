/**
 * The queue a device sees under vhost-user: core's device queue for the ring, plus what the
 * protocol needs around it. It can be closed (a stopped ring hands out no more chains while the
 * ones in flight still complete into the ring), records chains in the inflight area, resubmits
 * chains a previous back-end left in flight before taking new ones, and works out the position to
 * hand back (GET_VRING_BASE) when the device dropped chains it never started.
 */

import {
  type DescriptorChain,
  type DeviceQueue,
  PackedDeviceQueue,
  type QueuePosition,
  type RingLayout,
} from '@virtkit/core';
import type { PackedInflight, SavedChain, SplitInflight } from './inflight.js';

/** A phase in which chains recovered from the inflight area are served before the ring's own. */
export interface Resubmission {
  /** A queue whose available entries are the recovered heads (over the real descriptor table and used ring). */
  readonly queue: DeviceQueue;
  /** The ring's next available index once the recovered chains are done. */
  readonly nextAvail: number;
  /** Creates the ring's own queue at `position` once every recovered chain was returned. */
  resume(position: QueuePosition): DeviceQueue;
  /** Called (on a later tick) after the switch, so the device looks at the ring again. */
  onResumed(): void;
  /** Interrupts the driver (for completions published while switching). */
  signalUsed(): void;
}

/** Options of a {@link RingQueue}. */
export interface RingQueueOptions {
  readonly inflight?: SplitInflight;
  /**
   * Packed rings: the inflight record, and the chains a previous back-end left in it, to take
   * back (oldest first) before the ring's own.
   */
  readonly packed?: { readonly record: PackedInflight; readonly resubmit: readonly SavedChain[] };
  readonly resubmission?: Resubmission;
  /** Diagnostics. */
  readonly log?: (message: string) => void;
}

/**
 * A {@link DeviceQueue} that forwards to core's queue for one vring.
 *
 * @example
 * ```ts
 * const queue = new RingQueue(coreQueue, { inflight: area.queue(0, coreQueue.size) });
 * device.activate({ ...context, queues: [queue] });
 * queue.close(); // GET_VRING_BASE: no more chains; those in flight still complete
 * ```
 */
export class RingQueue implements DeviceQueue {
  readonly index: number;
  readonly size: number;
  readonly layout: RingLayout;
  #current: DeviceQueue;
  #resubmission: Resubmission | undefined;
  readonly #inflight: SplitInflight | undefined;
  readonly #packedRecord: PackedInflight | undefined;
  /** Packed: recovered chains not taken back yet. */
  readonly #packedResubmit: SavedChain[];
  /** Packed: the record entry of each chain handed out. */
  readonly #entries = new Map<DescriptorChain, number>();
  readonly #log: (message: string) => void;
  /** Chains handed out and not returned, with the order they were handed out in. */
  readonly #outstanding = new Map<DescriptorChain, number>();
  #sequence = 0;
  #closed = false;
  #detached = false;

  constructor(queue: DeviceQueue, options: RingQueueOptions = {}) {
    this.index = queue.index;
    this.size = queue.size;
    this.layout = queue.layout;
    this.#resubmission = options.resubmission;
    this.#current = options.resubmission?.queue ?? queue;
    this.#inflight = options.inflight;
    this.#packedRecord = options.packed?.record;
    this.#packedResubmit = [...(options.packed?.resubmit ?? [])];
    this.#log = options.log ?? (() => {});
  }

  get broken(): boolean {
    return this.#current.broken;
  }

  get inFlight(): number {
    return this.#outstanding.size;
  }

  /** True while chains recovered from the inflight area are being served. */
  get resubmitting(): boolean {
    return this.#resubmission !== undefined || this.#packedResubmit.length > 0;
  }

  /** True after {@link close}. */
  get closed(): boolean {
    return this.#closed;
  }

  pop(): DescriptorChain | null {
    if (this.#closed || this.#detached) return null;
    if (this.#packedResubmit.length > 0) {
      const chain = this.#takeBack();
      if (chain) return chain;
    }
    let chain = this.#current.pop();
    if (chain === null) {
      // Recovered chains that could not be popped (the queue broke on one) must not hold up
      // the ring for ever: with none outstanding, move on to the ring itself.
      const resubmission = this.#resubmission;
      if (resubmission && this.#current.broken && this.#outstanding.size === 0) {
        this.#resume(resubmission);
        chain = this.#current.pop();
      }
      if (chain === null) return null;
    }
    this.#outstanding.set(chain, this.#sequence++);
    this.#inflight?.popped(chain.id);
    const record = this.#packedRecord;
    if (record) {
      // Copied from the ring now, before used descriptors can land on these slots.
      this.#entries.set(chain, record.popped(chain.ringSlots));
    }
    return chain;
  }

  /** The next recovered packed chain that validates; the others are reported by core and skipped. */
  #takeBack(): DescriptorChain | null {
    const queue = this.#current;
    const pending = this.#packedResubmit;
    if (!(queue instanceof PackedDeviceQueue)) {
      pending.length = 0;
      return null;
    }
    for (let saved = pending.shift(); saved; saved = pending.shift()) {
      const chain = queue.resubmit(saved.descriptors);
      if (!chain) continue;
      this.#outstanding.set(chain, this.#sequence++);
      this.#entries.set(chain, saved.entry);
      if (pending.length === 0) this.#log(`queue ${this.index}: resubmitted requests taken back`);
      return chain;
    }
    return null;
  }

  hasAvailable(): boolean {
    return (
      !this.#closed &&
      !this.#detached &&
      (this.#packedResubmit.length > 0 || this.#current.hasAvailable())
    );
  }

  addUsed(chain: DescriptorChain, writtenLength: number): void {
    if (this.#detached) return;
    this.#current.addUsed(chain, writtenLength);
    this.#outstanding.delete(chain);
    this.#inflight?.added(chain.id);
    const entry = this.#entries.get(chain);
    if (entry !== undefined) {
      this.#entries.delete(chain);
      this.#packedRecord?.added(entry);
    }
  }

  publishUsed(): boolean {
    if (this.#detached) return false;
    const interrupt = this.#publish();
    const resubmission = this.#resubmission;
    if (resubmission && this.#outstanding.size === 0 && !resubmission.queue.hasAvailable()) {
      this.#resume(resubmission);
    }
    return interrupt;
  }

  disableNotifications(): void {
    if (!this.#detached) this.#current.disableNotifications();
  }

  enableNotifications(): boolean {
    if (this.#closed || this.#detached) return false;
    const available = this.#current.enableNotifications();
    return available || this.#packedResubmit.length > 0;
  }

  /**
   * The position in the guest's ring. While resubmitting, the ring's own queue has not started:
   * its next available entry is the one after the recovered chains.
   */
  position(): QueuePosition {
    const position = this.#current.position();
    const resubmission = this.#resubmission;
    return resubmission ? { ...position, nextAvail: resubmission.nextAvail } : position;
  }

  detach(): void {
    this.#detached = true;
    this.#closed = true;
    this.#current.detach();
  }

  /** Stops handing out chains; chains in flight may still be returned. */
  close(): void {
    this.#closed = true;
  }

  /**
   * Asks the driver to kick again, as an idle device does, before the ring is handed back: a
   * device stopped while it had kicks off (interrupt moderation holds them off while it polls)
   * would otherwise leave the next back-end a ring whose driver does not kick.
   */
  handBack(): void {
    if (!this.#detached) this.#current.enableNotifications();
  }

  /**
   * The position to report once the device has settled after {@link close}. Chains the device
   * still holds were never started (it settled every started one): when inflight tracking keeps
   * them they are resubmitted by the next activation; otherwise, if they are the ones handed out
   * last, the position is moved back so the driver's ring offers them again.
   */
  stoppedPosition(): QueuePosition {
    const position = this.position();
    const held = this.#outstanding.size;
    if (held === 0 || this.#inflight || this.#resubmission || this.#packedRecord) return position;
    let firstHeld = this.#sequence;
    let slots = 0;
    for (const [chain, sequence] of this.#outstanding) {
      firstHeld = Math.min(firstHeld, sequence);
      slots += chain.ringSlots;
    }
    if (firstHeld !== this.#sequence - held) {
      this.#log(
        `queue ${this.index}: the device dropped ${held} requests out of order at reset; the driver will not get them back`,
      );
      return position;
    }
    if (this.layout === 'split') {
      return { ...position, nextAvail: (position.nextAvail - held) & 0xffff };
    }
    let nextAvail = position.nextAvail - slots;
    let availWrap = position.availWrap !== false;
    while (nextAvail < 0) {
      nextAvail += this.size;
      availWrap = !availWrap;
    }
    return { ...position, nextAvail, availWrap };
  }

  #publish(): boolean {
    const record = this.#packedRecord;
    const batch = record?.batchPending === true;
    if (batch) {
      // The used position core has advanced to is where the batch ends once visible.
      const position = this.#current.position();
      record!.publishing(position.nextUsed, position.usedWrap !== false);
    }
    const interrupt = this.#current.publishUsed();
    if (batch) record!.published();
    // The used index the driver now sees (core advances it as elements are added).
    if (this.#inflight?.batchPending) this.#inflight.published(this.#current.position().nextUsed);
    return interrupt;
  }

  #resume(resubmission: Resubmission): void {
    // Whatever was returned on the recovered queue reaches the ring before that queue goes.
    if (this.#publish()) resubmission.signalUsed();
    const position = { ...this.#current.position(), nextAvail: resubmission.nextAvail };
    this.#current.detach();
    this.#resubmission = undefined;
    this.#current = resubmission.resume(position);
    this.#log(`queue ${this.index}: resubmitted requests done; serving the ring again`);
    setImmediate(() => {
      if (!this.#detached) resubmission.onResumed();
    });
  }
}
