import { createDeviceQueue, GuestMemory } from '@virtkit/core';
import { describe, expect, it } from 'vitest';
import { RingQueue } from './ring-queue.js';

const DESC = 0x1000;
const AVAIL = 0x2000;
const USED = 0x3000;
const SIZE = 8;
/** used->flags bit 0: VIRTQ_USED_F_NO_NOTIFY. */
const NO_NOTIFY = 1;

function ring(eventIdx: boolean) {
  const memory = GuestMemory.fromBuffer(new ArrayBuffer(1 << 16));
  const inner = createDeviceQueue(
    'split',
    {
      index: 0,
      size: SIZE,
      descAddr: DESC,
      driverAddr: AVAIL,
      deviceAddr: USED,
      eventIdx,
      indirect: false,
    },
    { memory, onViolation: () => {} },
  );
  return { memory, queue: new RingQueue(inner) };
}

/** The driver makes `count` one-descriptor buffers available (descriptors 0..count-1). */
function offer(memory: GuestMemory, count: number): void {
  for (let i = 0; i < count; i++) {
    memory.writeU64(DESC + i * 16, BigInt(0x8000 + i * 64));
    memory.writeU32(DESC + i * 16 + 8, 64);
    memory.writeU16(AVAIL + 4 + i * 2, i);
  }
  memory.writeU16(AVAIL + 2, count);
}

describe('RingQueue.handBack', () => {
  it('turns kicks back on for the next back-end after a stop with them off (no EVENT_IDX)', () => {
    const { memory, queue } = ring(false);
    queue.disableNotifications();
    expect(memory.readU16(USED) & NO_NOTIFY).toBe(NO_NOTIFY);
    queue.close();
    expect(queue.enableNotifications()).toBe(false); // a closed queue does nothing
    expect(memory.readU16(USED) & NO_NOTIFY).toBe(NO_NOTIFY);
    queue.handBack();
    expect(memory.readU16(USED) & NO_NOTIFY).toBe(0);
  });

  it('moves avail_event up to the next entry (EVENT_IDX)', () => {
    const { memory, queue } = ring(true);
    offer(memory, 3);
    queue.disableNotifications();
    for (let i = 0; i < 3; i++) expect(queue.pop()).not.toBeNull();
    const availEvent = () => memory.readU16(USED + 4 + SIZE * 8);
    expect(availEvent()).toBe(0); // left behind while kicks were off
    queue.close();
    queue.handBack();
    expect(availEvent()).toBe(3);
  });

  it('does nothing once detached', () => {
    const { memory, queue } = ring(false);
    queue.disableNotifications();
    queue.detach();
    queue.handBack();
    expect(memory.readU16(USED) & NO_NOTIFY).toBe(NO_NOTIFY);
  });
});
