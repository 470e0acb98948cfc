/**
 * Processing the request queue: pop chains, parse them, compute, answer, and publish the answers
 * with at most one interrupt per batch. The handler knows nothing about event loops or about who
 * calls it: it is given the queue, a way to signal the driver and a way to report violations.
 * The sample's work is synchronous; a device with asynchronous I/O adds used elements as each
 * completes and publishes them in batches (see device-blk's `handler.ts`).
 */

import type { DescriptorChain, DeviceQueue, ViolationSink } from '@virtkit/core';
import { adler32, crc32 } from './checksum.js';
import { RESPONSE_SIZE, SampleStatus } from './constants.js';
import { encodeResponse, parseRequest, type RequestRules } from './requests.js';

/** Counters of a handler (plain data). */
export interface RequestStats {
  /** Requests answered OK. */
  ok: number;
  /** Requests answered UNSUPP. */
  unsupported: number;
  /** Malformed requests (each also reported as a violation). */
  malformed: number;
}

/** What a {@link RequestHandler} works with. */
export interface HandlerContext {
  /** Limits of the device and the negotiated features. */
  readonly rules: RequestRules;
  /** Counts a guest mistake (the handler fills in the queue index). */
  readonly reportViolation: ViolationSink;
}

/**
 * Serves the sample device's request queue.
 *
 * @example
 * ```ts
 * const handler = new RequestHandler(ctx.queues[0]!, () => ctx.signalUsed(0), context);
 * handler.process(); // on each notification of queue 0
 * ```
 */
export class RequestHandler {
  /** The queue served. */
  readonly queue: DeviceQueue;
  /** Counters since activation. */
  readonly stats: RequestStats = { ok: 0, unsupported: 0, malformed: 0 };
  readonly #signal: () => void;
  readonly #context: HandlerContext;

  constructor(queue: DeviceQueue, signal: () => void, context: HandlerContext) {
    this.queue = queue;
    this.#signal = signal;
    this.#context = context;
  }

  /** Answers every available request (call on each notification; extra calls are harmless). */
  process(): void {
    const queue = this.queue;
    // The loop that never loses a wake-up: re-enabling notifications re-checks the ring.
    do {
      queue.disableNotifications();
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        queue.addUsed(chain, this.#answer(chain));
      }
      if (queue.publishUsed()) this.#signal();
    } while (queue.enableNotifications());
  }

  /** Handles one chain; returns the used length (bytes written into it). */
  #answer(chain: DescriptorChain): number {
    const parsed = parseRequest(chain, this.#context.rules);
    if (parsed.violation) {
      this.stats.malformed++;
      this.#context.reportViolation({
        ...parsed.violation,
        queue: this.queue.index,
        needsReset: false,
      });
    }
    if (!parsed.canRespond) return 0;
    const { request } = parsed;
    let status: SampleStatus;
    let checksum = 0;
    if (request.type === 'checksum') {
      checksum = request.algorithm === 'crc32' ? crc32(request.payload) : adler32(request.payload);
      status = SampleStatus.OK;
      this.stats.ok++;
    } else {
      status = request.status;
      if (status === SampleStatus.UNSUPP) this.stats.unsupported++;
    }
    chain.writer().write(encodeResponse(status, checksum));
    return RESPONSE_SIZE;
  }
}
