/**
 * Hostile-input properties: random and malformed requests (headers cut short, random types,
 * reserved bits, lengths that lie, payloads over the limit, requests split anywhere across
 * descriptors, too little room for the response) never make the device throw or need a reset,
 * never write past the response, and get exactly the answer, and the violation count, that an
 * independent model of the protocol predicts (`expectedAnswer` in test-support.ts).
 */

import { DeviceStatus, Feature, featureBit, type RingLayout } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { REQUEST_HEADER_SIZE } from './constants.js';
import { SampleDevice } from './device.js';
import { concat, decode, expectedAnswer, header } from './test-support.js';

const MAX_PAYLOAD = 32;
const SENTINEL = 0xa5;

interface HostileRequest {
  readonly type: number;
  readonly reserved: number;
  /** How `length` relates to the payload actually sent. */
  readonly length: { kind: 'true' } | { kind: 'off'; by: number } | { kind: 'any'; value: number };
  readonly payload: Uint8Array;
  /** Readable bytes actually sent (the header may be cut short); `undefined` = all. */
  readonly truncate: number | undefined;
  /** Where to cut the readable bytes into descriptors (fractions of its length). */
  readonly cuts: readonly number[];
  /** Sizes of the writable descriptors. */
  readonly writable: readonly number[];
}

const requestArb: fc.Arbitrary<HostileRequest> = fc.record({
  type: fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(0, 1) },
    fc.integer({ min: 0, max: 0xffff }),
  ),
  reserved: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, fc.integer({ min: 1, max: 0xffff })),
  length: fc.oneof(
    { weight: 6, arbitrary: fc.constant({ kind: 'true' as const }) },
    fc.record({ kind: fc.constant('off' as const), by: fc.integer({ min: -3, max: 3 }) }),
    fc.record({
      kind: fc.constant('any' as const),
      value: fc.integer({ min: 0, max: 0xffffffff }),
    }),
  ),
  // Lengths at the limit, where an off-by-one in the check shows, as often as the others.
  payload: fc
    .oneof(
      fc.integer({ min: 0, max: MAX_PAYLOAD + 8 }),
      fc.constantFrom(MAX_PAYLOAD - 1, MAX_PAYLOAD, MAX_PAYLOAD + 1),
    )
    .chain((length) => fc.uint8Array({ minLength: length, maxLength: length })),
  truncate: fc.oneof(
    { weight: 8, arbitrary: fc.constant(undefined) },
    fc.integer({ min: 0, max: REQUEST_HEADER_SIZE - 1 }),
  ),
  cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 4 }),
  writable: fc.oneof(
    { weight: 4, arbitrary: fc.constant([8]) },
    fc.array(fc.integer({ min: 1, max: 12 }), { maxLength: 4 }),
  ),
});

/** The readable bytes of a request, as the driver sends them. */
function encode(request: HostileRequest): Uint8Array {
  const actual = request.payload.length;
  const length =
    request.length.kind === 'true'
      ? actual
      : request.length.kind === 'off'
        ? Math.max(0, actual + request.length.by)
        : request.length.value;
  const bytes = concat(header(request.type, length, request.reserved), request.payload);
  return request.truncate === undefined ? bytes : bytes.subarray(0, request.truncate);
}

/** Splits `bytes` at the given fractions into non-empty pieces (zero-length descriptors aside). */
function split(bytes: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => Math.floor(c * bytes.length)))]
    .filter((p) => p > 0 && p < bytes.length)
    .sort((a, b) => a - b);
  const pieces: Uint8Array[] = [];
  let from = 0;
  for (const point of [...points, bytes.length]) {
    if (point > from) pieces.push(bytes.subarray(from, point));
    from = point;
  }
  return pieces;
}

const VARIANTS = (['split', 'packed'] as const).flatMap((layout) =>
  [false, true].map((eventIdx) => ({ layout, eventIdx })),
);

describe.each(VARIANTS)('sample device under hostile requests', ({ layout, eventIdx }) => {
  it(`${layout}${eventIdx ? '+event_idx' : ''}: answers as the model says, never throws or needs a reset`, async () => {
    for (const adler32 of [true, false]) {
      const device = new SampleDevice({ maxPayload: MAX_PAYLOAD, adler32 });
      let features = device.features | featureBit(Feature.VERSION_1);
      if (!eventIdx) features &= ~featureBit(Feature.RING_EVENT_IDX);
      const driver = await TestDriver.create(device, { layout: layout as RingLayout, features });
      const violations = driver.controller.violations;

      await fc.assert(
        fc.asyncProperty(requestArb, async (request) => {
          const readableBytes = encode(request);
          const readable = split(readableBytes, request.cuts);
          // A chain needs at least one descriptor.
          const writable =
            readable.length === 0 && request.writable.length === 0 ? [1] : request.writable;
          const writableLength = writable.reduce((sum, n) => sum + n, 0);
          const expected = expectedAnswer(readableBytes, writableLength, {
            maxPayload: MAX_PAYLOAD,
            adler32,
          });
          const before = violations.count();

          const { token, writable: segments } = driver.post(0, { readable, writable });
          for (const segment of segments) {
            driver.memory.fill(segment.addr, segment.len, SENTINEL);
          }
          driver.kick(0, true);
          const reply = await driver.wait(0, token);

          expect(reply.len).toBe(expected.len);
          if (expected.response) expect(decode(reply.written)).toEqual(expected.response);
          expect(violations.count() - before).toBe(expected.malformed ? 1 : 0);
          // Nothing written past the used length.
          const all = concat(
            ...segments.map((s) => {
              const out = new Uint8Array(s.len);
              driver.memory.read(s.addr, out);
              return out;
            }),
          );
          expect(all.subarray(reply.len).every((b) => b === SENTINEL)).toBe(true);
          expect(driver.status & DeviceStatus.DEVICE_NEEDS_RESET).toBe(0);
        }),
        { numRuns: 150 },
      );
      expect(violations.recent().every((v) => !v.needsReset)).toBe(true);
    }
  });
});
