import { openSync } from 'node:fs';
import type { QueuePosition } from '@virtkit/core';
import { describe, expect, it } from 'vitest';
import { closeQuietly } from './channel.js';
import { InflightArea, inflightQueueBytes, PackedInflight } from './inflight.js';
import { onCleanup } from './test-support.js';

function area(queues = 1, size = 16) {
  const { area, fd, size: bytes } = InflightArea.create(queues, size);
  onCleanup(() => {
    area.unmap();
    closeQuietly(fd);
  });
  return { area, fd, bytes };
}

describe('inflight area', () => {
  it('lays out one 64-byte aligned region per queue, room for either layout', () => {
    expect(inflightQueueBytes(128)).toBe(2112);
    expect(inflightQueueBytes(1)).toBe(64);
    expect(inflightQueueBytes(128, 'packed')).toBe(4160);
    const { bytes } = area(2, 128);
    expect(bytes).toBe(8320);
  });

  it('starts blank: the first recovery initializes it and trusts the front-end', () => {
    const tracker = area().area.queue(0, 16)!;
    expect(tracker.recover(5)).toEqual({ resubmit: [], nextAvail: 5, restored: false });
    expect(tracker.recover(5)).toEqual({ resubmit: [], nextAvail: 5, restored: true });
  });

  it('lists chains taken and not returned, oldest first', () => {
    const { area: shared } = area();
    const tracker = shared.queue(0, 16)!;
    tracker.recover(0);
    for (const head of [4, 9, 2, 7]) tracker.popped(head);
    tracker.added(9);
    tracker.published(1);
    // A new back-end maps the same area.
    const next = shared.queue(0, 16)!;
    expect(next.recover(1)).toEqual({ resubmit: [4, 2, 7], nextAvail: 4, restored: true });
    // Counting continues after the recovered chains: a chain taken now is younger.
    next.popped(9);
    expect(shared.queue(0, 16)!.recover(1).resubmit).toEqual([4, 2, 7, 9]);
  });

  it('completes the record of a batch published just before a crash', () => {
    const { area: shared } = area();
    const tracker = shared.queue(0, 16)!;
    tracker.recover(0);
    for (const head of [1, 2, 3]) tracker.popped(head);
    tracker.added(1);
    tracker.added(3);
    // The used index reached the ring (2) but the back-end died before recording it.
    expect(tracker.inflightHeads()).toEqual([1, 2, 3]);
    expect(shared.queue(0, 16)!.recover(2)).toEqual({
      resubmit: [2],
      nextAvail: 3,
      restored: true,
    });
  });

  it('starts over for a ring of another size (the driver set the rings up again)', () => {
    const { area: shared } = area(1, 32);
    const tracker = shared.queue(0, 16)!;
    tracker.recover(0);
    tracker.popped(3);
    expect(shared.queue(0, 32)!.recover(0).restored).toBe(false);
    expect(shared.queue(0, 64)).toBeUndefined();
    expect(shared.queue(1, 16)).toBeUndefined();
  });

  it('maps an area handed back, checking its geometry', () => {
    const { area: created, fd, bytes } = area(2, 64);
    created.queue(1, 64)!.recover(7);
    expect(() => InflightArea.map(-1, BigInt(bytes), 0n, 2, 64)).toThrow(/cannot stat/);
    const splitBytes = BigInt(2 * inflightQueueBytes(64));
    expect(() => InflightArea.map(fdCopy(fd), splitBytes - 1n, 0n, 2, 64)).toThrow(/does not fit/);
    // Sized for split records only (an earlier back-end's area): split rings only.
    const splitOnly = InflightArea.map(fdCopy(fd), splitBytes, 0n, 2, 64);
    onCleanup(() => splitOnly.unmap());
    expect(splitOnly.queue(1, 64)).toBeDefined();
    expect(splitOnly.packedQueue(1, 64, new DataView(new ArrayBuffer(1024)))).toBeUndefined();
    expect(() => InflightArea.map(fdCopy(fd), BigInt(bytes), 0n, 0, 64)).toThrow(/0 queues/);
    const mapped = InflightArea.map(fdCopy(fd), BigInt(bytes), 0n, 2, 64);
    onCleanup(() => mapped.unmap());
    expect(mapped.queue(1, 64)!.recover(7).restored).toBe(true);
  });
});

/** A second descriptor for the same memfd (map closes the one it is given). */
function fdCopy(fd: number): number {
  return openSync(`/proc/self/fd/${fd}`, 'r+');
}

describe('inflight area, packed rings', () => {
  const SIZE = 8;
  const NEXT = 1;
  const WRITE = 2;
  const INDIRECT = 4;
  const USED_FLAGS = (1 << 7) | (1 << 15); // AVAIL = USED = 1: used in the first lap

  /** A record over plain memory, and a descriptor ring the test writes as a driver would. */
  function packed(size = SIZE) {
    const region = new DataView(new ArrayBuffer(inflightQueueBytes(size, 'packed')));
    const ring = new DataView(new ArrayBuffer(16 * size));
    const tracker = () => new PackedInflight(region, size, ring);
    const start: QueuePosition = { nextAvail: 0, availWrap: true, nextUsed: 0, usedWrap: true };
    /** Writes a descriptor (available in the first lap) at `slot`. */
    const put = (slot: number, addr: number, len: number, id: number, flags: number) => {
      ring.setBigUint64(16 * slot, BigInt(addr), true);
      ring.setUint32(16 * slot + 8, len, true);
      ring.setUint16(16 * slot + 12, id, true);
      ring.setUint16(16 * slot + 14, flags | (1 << 7), true);
    };
    return { region, ring, tracker, start, put, size };
  }

  /** Three chains in slots 0-1 (id 5), 2 (id 2), 3 (id 7), all taken. */
  function threeTaken() {
    const p = packed();
    p.put(0, 0x1000, 16, 0xbeef, NEXT);
    p.put(1, 0x2000, 32, 5, WRITE);
    p.put(2, 0x3000, 48, 2, INDIRECT);
    p.put(3, 0x4000, 8, 7, 0);
    const first = p.tracker();
    expect(first.recover(p.start).restored).toBe(false);
    const a = first.popped(2);
    const b = first.popped(1);
    const c = first.popped(1);
    return { ...p, first, a, b, c };
  }

  it('starts blank: the first recovery initializes it at the front-end position', () => {
    const p = packed();
    const at = { nextAvail: 3, availWrap: false, nextUsed: 3, usedWrap: false };
    expect(p.tracker().recover(at)).toEqual({
      restored: false,
      position: at,
      resubmit: [],
      problems: [],
    });
    expect(p.tracker().recover(p.start)).toEqual({
      restored: true,
      position: at,
      resubmit: [],
      problems: [],
    });
  });

  it('gives back copies of the chains taken and not returned, oldest first, after out-of-order completions', () => {
    const { first, a, b, c, tracker, ring } = threeTaken();
    expect(first.inflightEntries()).toEqual([a, b, c]);
    // The device returns the middle chain: its used descriptor lands on slot 0, over chain a.
    first.added(b);
    first.publishing(1, true);
    ring.setUint16(14, USED_FLAGS, true);
    first.published();
    expect(first.inflightEntries()).toEqual([a, c]);
    // The back-end dies; the next one reads the record (the front-end's base is stale).
    const next = tracker().recover({ nextAvail: 0, availWrap: true, nextUsed: 0, usedWrap: true });
    expect(next.restored).toBe(true);
    expect(next.position).toEqual({ nextUsed: 1, usedWrap: true, nextAvail: 4, availWrap: true });
    expect(next.problems).toEqual([]);
    expect(next.resubmit.map((chain) => chain.descriptors)).toEqual([
      [
        { addr: 0x1000n, len: 16, id: 0xbeef, flags: NEXT | 0x80 },
        { addr: 0x2000n, len: 32, id: 5, flags: WRITE | 0x80 },
      ],
      [{ addr: 0x4000n, len: 8, id: 7, flags: 0x80 }],
    ]);
  });

  it('keeps a batch that was not yet visible when the back-end stopped, and drops one that was', () => {
    for (const visible of [false, true]) {
      const { first, b, tracker, ring } = threeTaken();
      first.added(b);
      first.publishing(1, true);
      if (visible) ring.setUint16(14, USED_FLAGS, true);
      // Stopped here: published() never ran.
      const next = tracker().recover(threeTaken().start);
      expect(next.resubmit.map((chain) => chain.descriptors.at(-1)?.id)).toEqual(
        visible ? [5, 7] : [5, 2, 7],
      );
      expect(next.position).toMatchObject({ nextUsed: visible ? 1 : 0, nextAvail: 4 });
    }
  });

  it('forgets a chain whose recording was cut short', () => {
    const { first, region, tracker } = threeTaken();
    const committed = region.getUint16(14, true); // old_free_head
    const avail = region.getUint16(22, true);
    const p = first.popped(1);
    expect(first.inflightEntries()).toContain(p);
    // As if the back-end stopped before the commit store (and the position store after it).
    region.setUint16(14, committed, true);
    region.setUint16(22, avail, true);
    const next = tracker().recover(threeTaken().start);
    expect(next.resubmit.map((chain) => chain.descriptors.at(-1)?.id)).toEqual([5, 2, 7]);
    expect(next.position.nextAvail).toBe(4);
  });

  it('keeps working over many laps, wrap counters included', () => {
    const p = packed(4);
    let tracker = p.tracker();
    tracker.recover(p.start);
    let used = 0;
    let usedWrap = true;
    const advance = () => {
      used++;
      if (used === 4) {
        used = 0;
        usedWrap = !usedWrap;
      }
    };
    for (let round = 0; round < 10; round++) {
      // Take two single-slot chains, return the second, then the first, restart the back-end.
      const kept = tracker.popped(1);
      const done = tracker.popped(1);
      tracker.added(done);
      advance();
      tracker.publishing(used, usedWrap);
      tracker.published();
      tracker.added(kept);
      advance();
      tracker.publishing(used, usedWrap);
      tracker.published();
      tracker = p.tracker();
      const recovered = tracker.recover(p.start);
      expect(recovered.resubmit).toEqual([]);
      expect(recovered.position).toEqual({
        nextUsed: used,
        usedWrap,
        nextAvail: used,
        availWrap: usedWrap,
      });
    }
    expect(usedWrap).toBe(false);
  });

  it('counts slots in flight at the front-end position of a fresh record as untracked', () => {
    const p = packed();
    p.tracker().recover({ nextAvail: 5, availWrap: true, nextUsed: 2, usedWrap: true });
    expect(p.tracker().recover(p.start).position).toEqual({
      nextAvail: 5,
      availWrap: true,
      nextUsed: 2,
      usedWrap: true,
    });
  });

  it('survives a damaged record: no exception, damage reported, sound chains kept', () => {
    const corruptions: [string, (region: DataView, entries: number[]) => void][] = [
      ['num 0', (r, [a]) => r.setUint16(32 + 32 * a! + 6, 0, true)],
      ['num huge', (r, [a]) => r.setUint16(32 + 32 * a! + 6, 0xffff, true)],
      ['link out of range', (r, [a]) => r.setUint16(32 + 32 * a! + 2, 999, true)],
      ['link into another chain', (r, [a, , c]) => r.setUint16(32 + 32 * a! + 2, c!, true)],
      ['wrong last', (r, [a]) => r.setUint16(32 + 32 * a! + 4, 7, true)],
    ];
    for (const [what, corrupt] of corruptions) {
      const { a, b, c, region, tracker } = threeTaken();
      corrupt(region, [a, b, c]);
      let recovery: ReturnType<PackedInflight['recover']> | undefined;
      expect(() => {
        recovery = tracker().recover(threeTaken().start);
      }, what).not.toThrow();
      expect(recovery!.problems.length, what).toBeGreaterThan(0);
      expect(recovery!.resubmit.length, what).toBeGreaterThanOrEqual(1);
      // The slots of a dropped chain stay taken: the ring is not read again there.
      expect(recovery!.position.nextAvail, what).toBe(4);
      // The rewritten record is consistent: read again, it reports nothing more.
      const again = tracker().recover(threeTaken().start);
      expect(again.problems, what).toEqual([]);
      expect(again.resubmit, what).toEqual(recovery!.resubmit);
      expect(again.position, what).toEqual(recovery!.position);
    }
    // Garbage everywhere (random bytes, valid header): never throws.
    for (let seed = 1; seed < 200; seed++) {
      const p = packed();
      p.tracker().recover(p.start);
      let x = seed;
      const bytes = new Uint8Array(p.region.buffer);
      for (let i = 12; i < bytes.length; i++) {
        x = (x * 1103515245 + 12345) >>> 0;
        bytes[i] = x >>> 24;
      }
      const recovery = p.tracker().recover(p.start);
      const slots = recovery.resubmit.reduce((n, chain) => n + chain.descriptors.length, 0);
      expect(slots).toBeLessThanOrEqual(p.size);
      expect(recovery.position.nextAvail).toBeLessThan(p.size);
    }
  });

  it('records what it can when asked for more than the record holds, and stays readable', () => {
    const p = packed(4);
    const tracker = p.tracker();
    tracker.recover({ nextAvail: 2, availWrap: true, nextUsed: 0, usedWrap: true });
    // Two slots were in flight, untracked, when the record started.
    expect(tracker.popped(1)).toBeGreaterThanOrEqual(0);
    expect(tracker.popped(0)).toBe(-1);
    expect(tracker.popped(9)).toBe(-1);
    const recovery = p.tracker().recover(p.start);
    expect(recovery.resubmit).toHaveLength(1);
    expect(recovery.position.nextAvail).toBeLessThan(4);
  });

  it('keeps split and packed records apart', () => {
    const { area: shared } = area(1, 16);
    const ring = new DataView(new ArrayBuffer(16 * 16));
    const start: QueuePosition = { nextAvail: 0, availWrap: true, nextUsed: 0, usedWrap: true };
    shared.packedQueue(0, 16, ring)!.recover(start);
    expect(shared.queue(0, 16)!.recover(0).restored).toBe(false);
    expect(shared.packedQueue(0, 16, ring)!.recover(start).restored).toBe(false);
    expect(shared.packedQueue(0, 16, ring)!.recover(start).restored).toBe(true);
  });
});

/** A DataView that records which bytes are written through its set* methods. */
class RecordingView extends DataView<ArrayBuffer> {
  readonly writes: number[] = [];
  override setUint8(offset: number, value: number): void {
    this.writes.push(offset);
    super.setUint8(offset, value);
  }
  override setUint16(offset: number, value: number, littleEndian?: boolean): void {
    this.writes.push(offset, offset + 1);
    super.setUint16(offset, value, littleEndian);
  }
}

describe('packed record commit', () => {
  it('commits the used index and wrap counter in one store: a kill cannot tear the position', () => {
    // A 4-slot ring whose device is at slot 3; one chain is taken and returned, so the batch
    // crosses the end of the ring (used position 3 → 0, wrap counter flips).
    const size = 4;
    const region = new RecordingView(new ArrayBuffer(inflightQueueBytes(size, 'packed')));
    const ring = new DataView(new ArrayBuffer(16 * size));
    const start = { nextAvail: 3, availWrap: true, nextUsed: 3, usedWrap: true };
    const record = new PackedInflight(region, size, ring);
    record.recover(start);
    ring.setBigUint64(48, 0x1000n, true);
    ring.setUint32(56, 512, true);
    ring.setUint16(60, 1, true);
    ring.setUint16(62, 1 << 7, true); // available, wrap 1
    const entry = record.popped(1);
    record.added(entry);
    record.publishing(0, false);
    ring.setUint16(62, (1 << 7) | (1 << 15), true); // the device made it used
    const before = new Uint8Array(region.buffer.slice(0));
    region.writes.length = 0;
    record.published();
    // No byte of the committed used position (old_used_idx at 18, old wrap counter at 21) is
    // written on its own: the commit is one 8-byte store of bytes 16-23.
    expect(region.writes.filter((offset) => offset >= 16 && offset < 24)).toEqual([]);
    expect(new PackedInflight(region, size, ring).recover(start).position).toMatchObject({
      nextUsed: 0,
      usedWrap: false,
    });
    // Killed before that store (only the old free head written): the ring shows the batch, so
    // recovery completes it to the same position.
    const torn = new DataView(before.buffer.slice(0));
    torn.setUint16(14, region.getUint16(14, true), true);
    expect(new PackedInflight(torn, size, ring).recover(start).position).toMatchObject({
      nextUsed: 0,
      usedWrap: false,
    });
  });
});
