import { openSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { closeQuietly } from './channel.js';
import { InflightArea, inflightQueueBytes } from './inflight.js';
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
  it('lays out one 64-byte aligned region per queue, as libvhost-user does', () => {
    expect(inflightQueueBytes(128)).toBe(2112);
    expect(inflightQueueBytes(1)).toBe(64);
    const { bytes } = area(2, 128);
    expect(bytes).toBe(4224);
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

  it('keeps a packed ring position, and the count of chains that were in flight', () => {
    const { area: shared } = area(1, 16);
    const record = shared.packedQueue(0, 16)!;
    expect(record.recover()).toBeUndefined();
    record.record({ nextAvail: 5, availWrap: false, nextUsed: 3, usedWrap: true }, 2);
    expect(shared.packedQueue(0, 16)!.recover()).toEqual({
      position: { nextAvail: 5, availWrap: false, nextUsed: 3, usedWrap: true },
      lost: 2,
    });
    // A split record is not read as a packed one.
    shared.queue(0, 16)!.recover(0);
    expect(shared.packedQueue(0, 16)!.recover()).toBeUndefined();
  });

  it('maps an area handed back, checking its geometry', () => {
    const { area: created, fd, bytes } = area(2, 64);
    created.queue(1, 64)!.recover(7);
    expect(() => InflightArea.map(-1, BigInt(bytes), 0n, 2, 64)).toThrow(/cannot stat/);
    expect(() => InflightArea.map(fdCopy(fd), BigInt(bytes) - 1n, 0n, 2, 64)).toThrow(
      /does not fit/,
    );
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
