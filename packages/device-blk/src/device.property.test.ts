/**
 * Hostile-input properties: random and malformed requests (headers cut short or split anywhere,
 * random types, sectors at and past the end, overflowing sectors, odd lengths, missing status
 * bytes, random discard segments) never make the device throw or need a reset, never reach the
 * storage outside `[0, capacity)`, and get the status an independent model of §5.2.6 predicts.
 * Sectors and lengths are biased to the end of the disk, and one test sweeps it exhaustively, so an
 * off-by-one in a range check fails here even though the backends check ranges again.
 */

import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  DeviceStatus,
  type GuestMemory,
  type Segment as GuestRange,
  type RingLayout,
} from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { openFileBackend } from './backends/file.js';
import { nodeFileIo } from './backends/file-io.js';
import { MemoryBackend } from './backends/memory.js';
import { totalRangeLength } from './backends/range.js';
import type { BlockBackend } from './backends/types.js';
import { BlkStatus } from './constants.js';
import { BlockDevice, MAX_UNMAP_SECTORS, MAX_UNMAP_SEGMENTS } from './device.js';
import type { ModerationTimer } from './moderation.js';
import { concat, header, postBlk, segments, workerOnlyIo } from './test-support.js';

const CAPACITY = 64 * 1024;
const SECTORS = BigInt(CAPACITY / 512);

interface Segment {
  sector: bigint;
  sectors: number;
  flags: number;
}

interface HostileRequest {
  type: number;
  sector: bigint;
  /** Header bytes actually sent (16 = whole). */
  headerLength: number;
  /** Random readable data after the header (used unless `segments` is set). */
  dataLength: number;
  /** DISCARD/WRITE_ZEROES segments sent as the data. */
  segments: Segment[] | undefined;
  /** Sizes of the writable buffers. */
  writable: number[];
  /** Where to cut the readable bytes into descriptors. */
  cuts: number[];
  fill: number;
}

const sectorArb = fc.oneof(
  fc.bigInt({ min: 0n, max: SECTORS + 2n }),
  // The last few sectors, where an off-by-one in a range check shows.
  fc.bigInt({ min: SECTORS - 10n, max: SECTORS + 1n }),
  fc.constantFrom(SECTORS - 1n, SECTORS, SECTORS + 1n, 1n << 44n, 1n << 55n, (1n << 64n) - 1n),
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
);

const segmentArb: fc.Arbitrary<Segment> = fc.record({
  sector: sectorArb,
  sectors: fc.oneof(
    fc.integer({ min: 0, max: 16 }),
    fc.constantFrom(MAX_UNMAP_SECTORS, MAX_UNMAP_SECTORS + 1, 0xffff_ffff),
  ),
  flags: fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(0, 1) },
    fc.integer({ min: 0, max: 0xffff_ffff }),
  ),
});

const requestArb: fc.Arbitrary<HostileRequest> = fc.record({
  type: fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(0, 1, 4, 8, 11, 13) },
    fc.constantFrom(2, 5, 10, 14, 15, 16, 18, 20, 22, 24, 26, 0x8000_0001),
    fc.integer({ min: 0, max: 0xffff_ffff }),
  ),
  sector: sectorArb,
  headerLength: fc.oneof(
    { weight: 8, arbitrary: fc.constant(16) },
    fc.integer({ min: 0, max: 15 }),
  ),
  dataLength: fc.oneof(
    fc.constantFrom(0, 512, 1024, 4096),
    fc.integer({ min: 0, max: 10 }).map((n) => n * 512),
    fc.integer({ min: 0, max: 2100 }),
  ),
  segments: fc.option(fc.array(segmentArb, { minLength: 0, maxLength: MAX_UNMAP_SEGMENTS + 2 }), {
    freq: 2,
  }) as fc.Arbitrary<Segment[] | undefined>,
  writable: fc.array(
    fc.oneof(
      fc.constantFrom(1, 21, 513, 1025),
      fc.integer({ min: 0, max: 10 }).map((n) => n * 512 + 1),
      fc.integer({ min: 0, max: 1100 }),
    ),
    { maxLength: 3 },
  ),
  cuts: fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 3 }),
  fill: fc.integer({ min: 1, max: 255 }),
});

/** The readable bytes of a request, cut into descriptors. */
function readableOf(request: HostileRequest): Uint8Array[] {
  const head = header(request.type, request.sector).subarray(0, request.headerLength);
  const data =
    request.headerLength === 16 && request.segments
      ? segments(...request.segments)
      : new Uint8Array(request.headerLength === 16 ? request.dataLength : 0).fill(request.fill);
  const bytes = concat(head, data);
  const parts: Uint8Array[] = [];
  let at = 0;
  for (const cut of request.cuts) {
    const end = Math.min(bytes.length, at + cut);
    if (end > at) parts.push(bytes.subarray(at, end));
    at = end;
  }
  if (at < bytes.length) parts.push(bytes.subarray(at));
  // A chain has at least one descriptor: with nothing else, send an empty readable one.
  if (parts.length === 0 && request.writable.length === 0) parts.push(new Uint8Array(0));
  return parts;
}

/** What §5.2.6 says the device answers, and what it does to the disk. */
interface Expected {
  /** Status byte, or undefined when the chain has no writable byte. */
  status: number | undefined;
  len: number;
  apply?: (disk: Uint8Array) => void;
  /** For a successful read: the offset read. */
  readAt?: number;
}

function model(request: HostileRequest, readOnly: boolean): Expected {
  const readable = readableOf(request).reduce((sum, part) => sum + part.length, 0);
  const writable = request.writable.reduce((sum, size) => sum + size, 0);
  if (writable === 0) return { status: undefined, len: 0 };
  const fail = (status: number): Expected => ({ status, len: 1 });
  if (readable < 16) return fail(BlkStatus.IOERR);
  const inRange = (sector: bigint, bytes: number) =>
    bytes % 512 === 0 && sector * 512n + BigInt(bytes) <= BigInt(CAPACITY);
  const data = readable - 16;
  switch (request.type) {
    case 0: {
      if (!inRange(request.sector, writable - 1)) return fail(BlkStatus.IOERR);
      return { status: BlkStatus.OK, len: writable, readAt: Number(request.sector) * 512 };
    }
    case 1: {
      if (readOnly || !inRange(request.sector, data)) return fail(BlkStatus.IOERR);
      const offset = Number(request.sector) * 512;
      const payload = request.segments ? segments(...request.segments) : undefined;
      return {
        status: BlkStatus.OK,
        len: 1,
        apply: (disk) =>
          payload ? disk.set(payload, offset) : disk.fill(request.fill, offset, offset + data),
      };
    }
    case 4:
      return { status: BlkStatus.OK, len: 1 };
    case 8:
      return writable - 1 >= 20 ? { status: BlkStatus.OK, len: 21 } : fail(BlkStatus.IOERR);
    case 11:
    case 13: {
      if (readOnly) return fail(BlkStatus.UNSUPP); // not offered on a read-only disk
      const list = request.segments;
      if (!list) {
        // Random bytes as segments: only the shape can be predicted without decoding them.
        if (data === 0 || data % 16 !== 0 || data / 16 > MAX_UNMAP_SEGMENTS) {
          return fail(BlkStatus.IOERR);
        }
        return { status: -1, len: -1 }; // anything consistent
      }
      if (list.length === 0 || list.length > MAX_UNMAP_SEGMENTS) return fail(BlkStatus.IOERR);
      const discard = request.type === 11;
      if (list.some((s) => s.flags & ~1 || (discard && s.flags & 1))) return fail(BlkStatus.UNSUPP);
      if (list.some((s) => s.sectors > MAX_UNMAP_SECTORS || !inRange(s.sector, s.sectors * 512))) {
        return fail(BlkStatus.IOERR);
      }
      return {
        status: BlkStatus.OK,
        len: 1,
        apply: (disk) => {
          for (const s of list) {
            const offset = Number(s.sector) * 512;
            disk.fill(0, offset, offset + s.sectors * 512);
          }
        },
      };
    }
    default:
      return fail(BlkStatus.UNSUPP);
  }
}

/** A backend wrapper that records any access outside the disk instead of trusting the device. */
function guarded(inner: BlockBackend, strays: string[]): BlockBackend {
  const check = (what: string, offset: number, length: number) => {
    if (!(offset >= 0 && length >= 0 && offset + length <= inner.capacity)) {
      strays.push(`${what} of ${length} at ${offset}`);
    }
  };
  const sum = (buffers: readonly Uint8Array[]) => buffers.reduce((n, b) => n + b.length, 0);
  return {
    capacity: inner.capacity,
    readOnly: inner.readOnly,
    get canUnmap() {
      return inner.canUnmap;
    },
    read(offset, buffers) {
      check('read', offset, sum(buffers));
      return inner.read(offset, buffers);
    },
    write(offset, buffers) {
      check('write', offset, sum(buffers));
      return inner.write(offset, buffers);
    },
    // The host-address path (aio=sync) is checked the same way, when the backend has it.
    ...(inner.readGuest && inner.writeGuest
      ? {
          readGuest(offset: number, memory: GuestMemory, ranges: readonly GuestRange[]) {
            check('readGuest', offset, totalRangeLength(ranges));
            return inner.readGuest!(offset, memory, ranges);
          },
          writeGuest(offset: number, memory: GuestMemory, ranges: readonly GuestRange[]) {
            check('writeGuest', offset, totalRangeLength(ranges));
            return inner.writeGuest!(offset, memory, ranges);
          },
        }
      : {}),
    flush: () => inner.flush(),
    discard(offset, length) {
      check('discard', offset, length);
      return inner.discard(offset, length);
    },
    writeZeroes(offset, length, unmap) {
      check('writeZeroes', offset, length);
      return inner.writeZeroes(offset, length, unmap);
    },
    close: () => inner.close(),
  };
}

/** Index of the first byte where `a` and `b` differ (-1 if equal): fast on 64 KiB disks. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (Buffer.from(a.buffer, a.byteOffset, a.length).equals(b)) return -1;
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return -1;
}

/**
 * A moderation timer on `setTimeout` (millisecond grain): with moderation on, requests posted
 * while an interrupt is held are taken only by the moderator's poll, so a lost poll would hang.
 */
function timeoutTimer(fire: () => void): ModerationTimer {
  let pending: ReturnType<typeof setTimeout> | undefined;
  const cancel = () => clearTimeout(pending);
  return {
    start: (micros) => {
      cancel();
      pending = setTimeout(fire, micros / 1000);
    },
    cancel,
    close: cancel,
  };
}

async function runBatch(
  backend: BlockBackend,
  disk: () => Uint8Array,
  layout: RingLayout,
  readOnly: boolean,
  requests: HostileRequest[],
  sequential: boolean,
  moderated = false,
): Promise<void> {
  const strays: string[] = [];
  const device = new BlockDevice({
    backend: guarded(backend, strays),
    ...(moderated && { moderation: { timer: timeoutTimer } }),
  });
  const driver = await TestDriver.create(device, { layout, memory: { size: 2 << 20 } });
  const shadow = disk().slice();
  const groups = sequential ? requests.map((r) => [r]) : [requests];
  for (const group of groups) {
    // One at a time, the disk is checked after every request: a later request with segments we
    // do not decode resynchronizes the shadow and would hide an earlier wrong write.
    if (sequential) expect(firstDifference(disk(), shadow)).toBe(-1);
    const posted = group.map((request) => ({
      request,
      expected: model(request, readOnly),
      reply: postBlk(driver, 0, readableOf(request), request.writable),
    }));
    driver.kick(0);
    for (const { request, expected, reply } of posted) {
      const got = await reply.done();
      const context = `${JSON.stringify(request, (_, v) => (typeof v === 'bigint' ? `${v}n` : v))}`;
      if (expected.status === undefined) {
        expect(got.len, context).toBe(0);
        continue;
      }
      if (expected.status === -1) {
        expect([BlkStatus.OK, BlkStatus.IOERR, BlkStatus.UNSUPP], context).toContain(got.status);
        // Random segments we did not decode: trust the device's effect, keep the shadow in step.
        if (got.status === BlkStatus.OK) shadow.set(disk());
        continue;
      }
      expect(got.status, context).toBe(expected.status);
      expect(got.len, context).toBe(expected.len);
      if (expected.readAt !== undefined) {
        const want = shadow.subarray(expected.readAt, expected.readAt + got.len - 1);
        expect(firstDifference(got.data, want), context).toBe(-1);
      }
      expected.apply?.(shadow);
    }
  }
  expect(strays).toEqual([]);
  expect(driver.status & DeviceStatus.DEVICE_NEEDS_RESET).toBe(0);
  expect(firstDifference(disk(), shadow)).toBe(-1);
  await driver.reset();
}

/**
 * Well-formed reads and writes (1 to 8 sectors inside the disk, data cut into up to 4
 * descriptors, reads' buffers split too): what an honest guest sends, so the data path of each
 * I/O engine is checked byte for byte, not only its refusals.
 */
const wellFormedArb: fc.Arbitrary<HostileRequest> = fc
  .record({
    write: fc.boolean(),
    sectors: fc.integer({ min: 1, max: 8 }),
    at: fc.nat({ max: CAPACITY / 512 - 1 }),
    cuts: fc.array(fc.integer({ min: 1, max: 1500 }), { maxLength: 3 }),
    split: fc.integer({ min: 0, max: 8 }),
    fill: fc.integer({ min: 1, max: 255 }),
  })
  .map(({ write, sectors, at, cuts, split, fill }) => {
    const bytes = sectors * 512;
    const sector = BigInt(Math.min(at, CAPACITY / 512 - sectors));
    const readBuffers =
      split > 0 && split < sectors ? [split * 512, (sectors - split) * 512 + 1] : [bytes + 1];
    return {
      type: write ? 1 : 0,
      sector,
      headerLength: 16,
      dataLength: write ? bytes : 0,
      segments: undefined,
      writable: write ? [1] : readBuffers,
      cuts: [16, ...cuts],
      fill,
    };
  });

const batchArb = fc.record({
  layout: fc.constantFrom<RingLayout>('split', 'packed'),
  readOnly: fc.boolean(),
  moderated: fc.boolean(),
  requests: fc.array(requestArb, { minLength: 1, maxLength: 8 }),
});

describe('BlockDevice under hostile requests', () => {
  it('answers per spec and stays inside an in-memory disk', async () => {
    await fc.assert(
      fc.asyncProperty(batchArb, async ({ layout, readOnly, moderated, requests }) => {
        const data = Uint8Array.from({ length: CAPACITY }, (_, i) => (i * 7) & 0xff);
        const memory = new MemoryBackend({ data, readOnly });
        await runBatch(memory, () => memory.data, layout, readOnly, requests, false, moderated);
      }),
      { numRuns: 200 },
    );
  });

  it('accepts exactly the ranges that fit, for every request ending near the end of the disk', async () => {
    // Exhaustive where an off-by-one lives: each range-taking request type, starting in the last
    // 10 sectors (and just past the end), 0 to 10 sectors long.
    const strays: string[] = [];
    const memory = new MemoryBackend({ size: CAPACITY });
    const driver = await TestDriver.create(new BlockDevice({ backend: guarded(memory, strays) }), {
      memory: { size: 4 << 20 },
    });
    for (let sector = SECTORS - 10n; sector <= SECTORS + 2n; sector++) {
      const posted = [];
      for (let sectors = 0; sectors <= 10; sectors++) {
        const bytes = sectors * 512;
        const fits = sector + BigInt(sectors) <= SECTORS;
        const requests: [string, Uint8Array[], number[]][] = [
          ['IN', [header(0, sector)], [bytes + 1]],
          ['OUT', [header(1, sector), new Uint8Array(bytes).fill(9)], [1]],
          ['DISCARD', [header(11), segments({ sector, sectors })], [1]],
          ['WRITE_ZEROES', [header(13), segments({ sector, sectors, flags: 1 })], [1]],
        ];
        for (const [name, readable, writable] of requests) {
          const what = `${name} of ${sectors} sectors at sector ${sector}`;
          posted.push({ what, fits, reply: postBlk(driver, 0, readable, writable) });
        }
      }
      driver.kick(0);
      for (const { what, fits, reply } of posted) {
        expect((await reply.done()).status, what).toBe(fits ? BlkStatus.OK : BlkStatus.IOERR);
      }
    }
    expect(strays).toEqual([]);
    await driver.reset();
  });

  const dir = mkdtempSync(join(tmpdir(), 'virtkit-blk-fuzz-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  for (const [aio, workerOnly] of [
    ['threads', true],
    ['threads', false],
    ['sync', false],
  ] as const) {
    it(`moves well-formed reads and writes exactly, one at a time (aio=${aio}${workerOnly ? ', worker threads only' : ''})`, async () => {
      let run = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.constantFrom<RingLayout>('split', 'packed'),
          fc.array(wellFormedArb, { minLength: 1, maxLength: 12 }),
          fc.boolean(),
          async (layout, requests, moderated) => {
            const path = join(dir, `exact-${aio}-${run++}.img`);
            writeFileSync(
              path,
              Uint8Array.from({ length: CAPACITY }, (_, i) => (i * 31 + (i >> 9)) & 0xff),
            );
            const io = workerOnly ? await workerOnlyIo() : await nodeFileIo();
            const backend = await openFileBackend({ path, aio, io });
            try {
              await runBatch(
                backend,
                () => new Uint8Array(readFileSync(path)),
                layout,
                false,
                requests,
                true,
                moderated,
              );
            } finally {
              await backend.close();
            }
            rmSync(path);
          },
        ),
        { numRuns: 25 },
      );
    });

    it(`never writes a file image outside [0, capacity) (aio=${aio})`, async () => {
      let run = 0;
      await fc.assert(
        fc.asyncProperty(batchArb, async ({ layout, readOnly, moderated, requests }) => {
          const path = join(dir, `fuzz-${aio}-${run++}.img`);
          writeFileSync(
            path,
            Uint8Array.from({ length: CAPACITY }, (_, i) => (i * 13) & 0xff),
          );
          const backend = await openFileBackend({ path, readOnly, aio });
          try {
            // One request at a time: concurrent overlapping writes have no defined order.
            await runBatch(
              backend,
              () => new Uint8Array(readFileSync(path)),
              layout,
              readOnly,
              requests,
              true,
              moderated,
            );
          } finally {
            await backend.close();
          }
          expect(statSync(path).size).toBe(CAPACITY);
          rmSync(path);
        }),
        { numRuns: 40 },
      );
    });
  }
});
