/**
 * Processing one request queue: pop chains, parse them, start their I/O, and return them to the
 * driver as their I/O completes, in whatever order that is. Requests are never serialized: every
 * chain popped has its backend call started at once. Completions that arrive together are
 * published together, with at most one interrupt per batch.
 *
 * The handler knows nothing about event loops: it is given a way to signal the driver and a way
 * to defer the publishing of asynchronous completions (the device passes `setImmediate`, so all
 * completions of one event-loop turn share one used-ring update and one interrupt).
 */

import type { DescriptorChain, DeviceQueue, ViolationSink } from '@virtkit/core';
import { viewsOf } from './backends/range.js';
import type { BlockBackend } from './backends/types.js';
import { type BlkStatus, BlkStatus as Status } from './constants.js';
import { InterruptModerator, type ModerationOptions } from './moderation.js';
import { type BlockRequest, parseRequest, type RequestRules } from './requests.js';

/** Per-request-type counters of a handler (plain data). */
export interface RequestStats {
  read: number;
  write: number;
  flush: number;
  getId: number;
  discard: number;
  writeZeroes: number;
  /** Requests answered without I/O: unsupported, malformed or refused. */
  rejected: number;
  /** Requests whose backend call failed (completed with IOERR). */
  ioErrors: number;
}

/** What a {@link RequestHandler} works with; shared by every queue of a device. */
export interface HandlerContext {
  readonly backend: BlockBackend;
  /** Request limits of the negotiated features. */
  readonly rules: RequestRules;
  /** The 20-byte GET_ID answer (zero padded). */
  readonly deviceId: Uint8Array;
  /** True if writes must be stable before they complete (writethrough cache mode). */
  writethrough(): boolean;
  /** Whether WRITE_ZEROES with the unmap flag may deallocate (else it writes zeroes). */
  readonly allowUnmap: boolean;
  /** Counts a guest mistake (the handler fills in the queue). */
  readonly reportViolation: ViolationSink;
  /** Diagnostics for host-side I/O failures. */
  readonly log: (message: string) => void;
  /** Runs `task` later, after the current batch of completions (e.g. `setImmediate`). */
  readonly defer: (task: () => void) => void;
  /** Called after a discard or write-zeroes completes (the backend's `canUnmap` may change). */
  readonly afterUnmap?: () => void;
  /** Adaptive interrupt moderation (see {@link InterruptModerator}); absent: none. */
  readonly moderation?: ModerationOptions;
}

/**
 * Serves one virtio-blk request queue.
 *
 * @example
 * ```ts
 * const handler = new RequestHandler(ctx.queues[0]!, () => ctx.signalUsed(0), context);
 * handler.process(); // on each notification of queue 0
 * await handler.settle(); // on reset
 * ```
 */
export class RequestHandler {
  readonly queue: DeviceQueue;
  readonly stats: RequestStats = {
    read: 0,
    write: 0,
    flush: 0,
    getId: 0,
    discard: 0,
    writeZeroes: 0,
    rejected: 0,
    ioErrors: 0,
  };
  readonly #signal: () => void;
  readonly #context: HandlerContext;
  readonly #inFlight = new Set<Promise<void>>();
  readonly #moderator: InterruptModerator | undefined;
  #unpublished = false;
  #publishScheduled = false;
  #stopped = false;

  constructor(queue: DeviceQueue, signal: () => void, context: HandlerContext) {
    this.queue = queue;
    this.#signal = signal;
    this.#context = context;
    this.#moderator =
      context.moderation &&
      new InterruptModerator(
        {
          notify: signal,
          poll: () => this.#takeHeld(false),
          resume: () => this.#takeHeld(true),
        },
        context.moderation,
      );
  }

  /** The interrupt moderation's counters, when it is on. */
  get moderation(): InterruptModerator['stats'] | undefined {
    return this.#moderator?.stats;
  }

  /** Requests whose I/O is still running. */
  get inFlight(): number {
    return this.#inFlight.size;
  }

  /** Takes every available request (call on each notification). */
  process(): void {
    if (this.#stopped) return;
    // While an interrupt is held the driver's kicks stay off: the moderator polls the ring.
    const moderator = this.#moderator;
    const arrived = this.#take(!moderator?.holding);
    moderator?.arrived(arrived);
    if (!this.#unpublished) return;
    // Requests that completed at once (aio=sync, a memory disk, refusals). With moderation they
    // are published now: the moderator decides whether the driver hears of them at once or after
    // a hold, and a driver waiting for one request (queue depth 1) should not also wait for the
    // event loop to come round (~11 µs a request, measured under QEMU with 1 MiB writes).
    // Without it they wait for the end of this event-loop turn, to share one used-ring update
    // and one interrupt with the other kicks' and the thread pool's completions of the same
    // turn: interrupts are what a guest pays most for (measured: 4 KiB random reads at queue
    // depth 32 under QEMU).
    if (moderator) this.#publish();
    else this.#schedulePublish();
  }

  /** Pops and starts every available request; asks for the next kick if `enable`. */
  #take(enable: boolean): number {
    const queue = this.queue;
    let arrived = 0;
    do {
      queue.disableNotifications();
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        arrived++;
        this.#start(chain);
      }
    } while (enable && queue.enableNotifications());
    return arrived;
  }

  /**
   * The moderator's poll (and resume): take requests and publish what completed at once. A
   * notification is held (or about to be sent), so the ring's verdict is not needed.
   */
  #takeHeld(enable: boolean): number {
    if (this.#stopped) return 0;
    const arrived = this.#take(enable);
    this.#publishNow();
    return arrived;
  }

  /**
   * Stops taking requests and resolves when every request in flight has finished its I/O (their
   * completions go nowhere if core has detached the queue, which it does on reset).
   */
  async settle(): Promise<void> {
    this.#stopped = true;
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
    this.#moderator?.close();
  }

  #start(chain: DescriptorChain): void {
    const context = this.#context;
    let parsed: ReturnType<typeof parseRequest>;
    try {
      parsed = parseRequest(chain, context.rules);
    } catch (error) {
      // Not reachable for chains a queue hands out (their memory was checked); if it happens
      // anyway, the guest still gets its chain back and the device keeps going.
      context.log(`virtio-blk queue ${this.queue.index}: cannot parse request: ${String(error)}`);
      this.stats.rejected++;
      this.#complete(chain, undefined, Status.IOERR, 0);
      return;
    }
    if (parsed.violation) {
      context.reportViolation({ ...parsed.violation, queue: this.queue.index, needsReset: false });
    }
    const { statusAddress, request } = parsed;
    if (statusAddress === undefined) {
      this.stats.rejected++;
      this.#complete(chain, undefined, Status.IOERR, 0);
      return;
    }
    let outcome: BlkStatus | Promise<BlkStatus>;
    try {
      outcome = this.#execute(request);
    } catch (error) {
      outcome = this.#failed(request, error);
    }
    if (typeof outcome === 'number') {
      this.#complete(chain, statusAddress, outcome, parsed.lengthOnSuccess);
      return;
    }
    const pending: Promise<void> = outcome
      .catch((error: unknown) => this.#failed(request, error))
      .then((status) => {
        this.#inFlight.delete(pending);
        this.#complete(chain, statusAddress, status, parsed.lengthOnSuccess);
        this.#schedulePublish();
      });
    this.#inFlight.add(pending);
  }

  /** Starts the backend work; returns the status, or a promise of it. */
  #execute(request: BlockRequest): BlkStatus | Promise<BlkStatus> {
    const { backend } = this.#context;
    switch (request.type) {
      case 'answer':
        this.stats.rejected++;
        return request.status;
      case 'read':
        this.stats.read++;
        return settled(
          backend.readGuest
            ? backend.readGuest(request.offset, request.memory, request.ranges)
            : backend.read(request.offset, viewsOf(request.memory, request.ranges)),
        );
      case 'write':
        this.stats.write++;
        return this.#stable(
          backend.writeGuest
            ? backend.writeGuest(request.offset, request.memory, request.ranges)
            : backend.write(request.offset, viewsOf(request.memory, request.ranges)),
        );
      case 'flush':
        this.stats.flush++;
        // Nothing can be unstable on a read-only disk.
        return backend.readOnly ? Status.OK : settled(backend.flush());
      case 'get-id':
        this.stats.getId++;
        copyInto(request.buffers, this.#context.deviceId);
        return Status.OK;
      case 'discard': {
        this.stats.discard++;
        return this.#afterUnmap(
          settled(sequence(request.ranges, (range) => backend.discard(range.offset, range.length))),
        );
      }
      case 'write-zeroes': {
        this.stats.writeZeroes++;
        const allowUnmap = this.#context.allowUnmap;
        const done = sequence(request.ranges, (range) =>
          backend.writeZeroes(range.offset, range.length, range.unmap && allowUnmap),
        );
        return this.#afterUnmap(this.#stable(done));
      }
    }
  }

  /** In writethrough mode, a write is complete only once it is stable (§5.2.6.2). */
  #stable(written: void | Promise<void>): BlkStatus | Promise<BlkStatus> {
    if (!this.#context.writethrough()) return settled(written);
    const { backend } = this.#context;
    if (written instanceof Promise) return written.then(() => settled(backend.flush()));
    return settled(backend.flush());
  }

  #afterUnmap(outcome: BlkStatus | Promise<BlkStatus>): BlkStatus | Promise<BlkStatus> {
    const after = this.#context.afterUnmap;
    if (!after) return outcome;
    if (typeof outcome === 'number') {
      after();
      return outcome;
    }
    return outcome.finally(after);
  }

  #failed(request: BlockRequest, error: unknown): BlkStatus {
    this.stats.ioErrors++;
    this.#context.log(
      `virtio-blk queue ${this.queue.index}: ${request.type} failed: ${error instanceof Error ? error.message : String(error)}`,
    );
    return Status.IOERR;
  }

  #complete(
    chain: DescriptorChain,
    statusAddress: number | undefined,
    status: BlkStatus,
    lengthOnSuccess: number,
  ): void {
    let length = 0;
    try {
      if (statusAddress !== undefined) {
        chain.memory.writeU8(statusAddress, status);
        length = status === Status.OK ? lengthOnSuccess : 1;
      }
      this.queue.addUsed(chain, length);
      this.#unpublished = true;
    } catch (error) {
      // Completions may run on a later tick: an exception here would be an unhandled rejection.
      this.#context.log(
        `virtio-blk queue ${this.queue.index}: cannot complete request: ${String(error)}`,
      );
    }
  }

  #schedulePublish(): void {
    if (this.#publishScheduled) return;
    this.#publishScheduled = true;
    this.#context.defer(() => {
      this.#publishScheduled = false;
      this.#publish();
    });
  }

  #publish(): void {
    if (!this.#publishNow()) return;
    if (this.#moderator) this.#moderator.due();
    else this.#signal();
  }

  /** Publishes the completions added since the last time; true if the driver wants a notification. */
  #publishNow(): boolean {
    if (!this.#unpublished) return false;
    this.#unpublished = false;
    return this.queue.publishUsed();
  }
}

/** OK once `result` settles; a synchronous result stays synchronous. */
function settled(result: void | Promise<void>): BlkStatus | Promise<BlkStatus> {
  return result instanceof Promise ? result.then(() => Status.OK) : Status.OK;
}

/** Runs `each` over `items` one after another (segments of one request are few). */
function sequence<T>(
  items: readonly T[],
  each: (item: T) => void | Promise<void>,
): void | Promise<void> {
  for (let i = 0; i < items.length; i++) {
    const result = each(items[i]!);
    if (result instanceof Promise) {
      return result.then(async () => {
        for (let j = i + 1; j < items.length; j++) await each(items[j]!);
      });
    }
  }
}

/** Copies `source` across `views` in order (as far as they reach). */
function copyInto(views: readonly Uint8Array[], source: Uint8Array): void {
  let at = 0;
  for (const view of views) {
    view.set(source.subarray(at, at + view.length));
    at += view.length;
  }
}
