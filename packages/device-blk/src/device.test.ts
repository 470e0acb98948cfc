import { DeviceStatus, Feature, featureBit, type RingLayout } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { describe, expect, it } from 'vitest';
import { MemoryBackend } from './backends/memory.js';
import type { BlockBackend } from './backends/types.js';
import { BlkConfig, BlkFeature, BlkStatus, BlkRequestType as T } from './constants.js';
import { BlockDevice, type BlockDeviceOptions } from './device.js';
import {
  blkRequest,
  ControlledBackend,
  concat,
  header,
  postBlk,
  segments,
} from './test-support.js';

const MiB = 1 << 20;
const bit = (feature: number) => featureBit(feature);
const VERSION_1 = featureBit(Feature.VERSION_1);

interface Variant {
  readonly layout: RingLayout;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
}

const VARIANTS: Variant[] = (['split', 'packed'] as const).flatMap((layout) =>
  [false, true].flatMap((eventIdx) =>
    [false, true].map((indirect) => ({ layout, eventIdx, indirect })),
  ),
);

function name(v: Variant): string {
  return `${v.layout}${v.eventIdx ? '+event_idx' : ''}${v.indirect ? '+indirect' : ''}`;
}

/** Starts a driver on `device` with the variant's ring features, minus `drop`. */
function drive(device: BlockDevice, variant: Variant = VARIANTS[0]!, drop = 0n) {
  let features = device.features | VERSION_1;
  if (!variant.eventIdx) features &= ~featureBit(Feature.RING_EVENT_IDX);
  if (!variant.indirect) features &= ~featureBit(Feature.RING_INDIRECT_DESC);
  return TestDriver.create(device, { layout: variant.layout, features: features & ~drop });
}

function memoryDevice(options: Partial<BlockDeviceOptions> = {}, size = MiB) {
  const backend = new MemoryBackend({ size });
  return { backend, device: new BlockDevice({ backend, defer: setImmediate, ...options }) };
}

function pattern(length: number, seed: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);
}

describe('BlockDevice configuration', () => {
  it('lays out the config space as §5.2.4 says', async () => {
    const { device } = memoryDevice(
      {
        queues: 4,
        queueSize: 128,
        logicalBlockSize: 4096,
        physicalBlockSize: 16384,
        writeCache: true,
      },
      64 * MiB,
    );
    const driver = await drive(device);
    const config = new DataView(driver.readConfig(0, BlkConfig.SIZE).buffer);
    expect(device.config.size).toBe(96);
    expect(config.getBigUint64(0, true)).toBe(BigInt((64 * MiB) / 512)); // capacity
    expect(config.getUint32(8, true)).toBe(1 << 20); // size_max
    expect(config.getUint32(12, true)).toBe(126); // seg_max = queue size - 2
    expect(config.getUint16(16, true)).toBe(Math.floor((64 * MiB) / 512 / (16 * 63))); // cylinders
    expect(config.getUint8(18)).toBe(16); // heads
    expect(config.getUint8(19)).toBe(63); // sectors
    expect(config.getUint32(20, true)).toBe(4096); // blk_size
    expect(config.getUint8(24)).toBe(2); // physical_block_exp: 4 logical blocks per physical
    expect(config.getUint8(25)).toBe(0); // alignment_offset
    expect(config.getUint16(26, true)).toBe(4); // min_io_size in logical blocks
    expect(config.getUint32(28, true)).toBe(0); // opt_io_size
    expect(config.getUint8(32)).toBe(1); // writeback
    expect(config.getUint8(33)).toBe(0); // unused0
    expect(config.getUint16(34, true)).toBe(4); // num_queues
    expect(config.getUint32(36, true)).toBe(0x3fffff); // max_discard_sectors
    expect(config.getUint32(40, true)).toBe(32); // max_discard_seg
    expect(config.getUint32(44, true)).toBe(32); // discard_sector_alignment: 16 KiB
    expect(config.getUint32(48, true)).toBe(0x3fffff); // max_write_zeroes_sectors
    expect(config.getUint32(52, true)).toBe(32); // max_write_zeroes_seg
    expect(config.getUint8(56)).toBe(1); // write_zeroes_may_unmap
    // unused1, secure erase and zoned fields: zero (features not offered).
    expect([...driver.readConfig(57, 96 - 57)].every((b) => b === 0)).toBe(true);
  });

  it('offers the block and ring features, MQ only with several queues', () => {
    const { device } = memoryDevice();
    const expected = [
      BlkFeature.SIZE_MAX,
      BlkFeature.SEG_MAX,
      BlkFeature.GEOMETRY,
      BlkFeature.BLK_SIZE,
      BlkFeature.FLUSH,
      BlkFeature.TOPOLOGY,
      BlkFeature.CONFIG_WCE,
      BlkFeature.DISCARD,
      BlkFeature.WRITE_ZEROES,
      Feature.RING_INDIRECT_DESC,
      Feature.RING_EVENT_IDX,
      Feature.RING_PACKED,
    ].reduce((mask, feature) => mask | bit(feature), 0n);
    expect(device.features).toBe(expected);
    expect(memoryDevice({ queues: 2 }).device.features).toBe(expected | bit(BlkFeature.MQ));
    const noDiscard = memoryDevice({ discard: false }).device;
    expect(noDiscard.features).toBe(expected & ~bit(BlkFeature.DISCARD));
    expect(noDiscard.config.getU8(BlkConfig.WRITE_ZEROES_MAY_UNMAP)).toBe(0);
    expect(noDiscard.config.getU32(BlkConfig.MAX_DISCARD_SECTORS)).toBe(0);
  });

  it('offers RO and neither DISCARD nor WRITE_ZEROES for a read-only backend', () => {
    const device = new BlockDevice({ backend: new MemoryBackend({ size: MiB, readOnly: true }) });
    expect(device.features & bit(BlkFeature.RO)).not.toBe(0n);
    expect(device.features & bit(BlkFeature.DISCARD)).toBe(0n);
    expect(device.features & bit(BlkFeature.WRITE_ZEROES)).toBe(0n);
  });

  it('refuses options that cannot work', () => {
    const backend = new MemoryBackend({ size: MiB });
    expect(() => new BlockDevice({ backend, queues: 17 })).toThrow(/queues/);
    expect(() => new BlockDevice({ backend, queueSize: 100 })).toThrow(/power of two/);
    expect(() => new BlockDevice({ backend, logicalBlockSize: 1000 })).toThrow(/logical/);
    expect(() => new BlockDevice({ backend, physicalBlockSize: 256 })).toThrow(/physical/);
    expect(() => new BlockDevice({ backend, serial: 'x'.repeat(21) })).toThrow(/at most 20/);
    expect(() => new BlockDevice({ backend, serial: 'disque-é' })).toThrow(/ASCII/);
    const odd = new MemoryBackend({ size: 3 * 512 });
    expect(() => new BlockDevice({ backend: odd, logicalBlockSize: 1024 })).toThrow(
      expect.objectContaining({ code: 'BLK_IMAGE_SIZE' }),
    );
  });
});

describe.each(VARIANTS.map((v) => [name(v), v] as const))('BlockDevice over %s', (_, variant) => {
  it('writes and reads back across several segments', async () => {
    const { device, backend } = memoryDevice();
    const driver = await drive(device, variant);
    const data = pattern(3 * 512, 5);
    const write = await blkRequest(
      driver,
      0,
      [header(T.OUT, 10), data.subarray(0, 700), data.subarray(700)],
      [1],
    );
    expect(write).toMatchObject({ status: BlkStatus.OK, len: 1 });
    expect(backend.data.subarray(5120, 5120 + 1536)).toEqual(data);
    const read = await blkRequest(driver, 0, [header(T.IN, 10)], [1000, 536, 1]);
    expect(read.status).toBe(BlkStatus.OK);
    expect(read.len).toBe(1537);
    expect(read.data.subarray(0, 1536)).toEqual(data);
    // The status byte may share a descriptor with data.
    const shared = await blkRequest(driver, 0, [header(T.IN, 11)], [1025]);
    expect(shared.status).toBe(BlkStatus.OK);
    expect(shared.data).toEqual(data.subarray(512));
    expect(driver.controller.violations.count()).toBe(0);
  });

  it('answers FLUSH, GET_ID, DISCARD, WRITE_ZEROES and unsupported requests', async () => {
    const { device, backend } = memoryDevice({ serial: 'virtkit-disk' });
    backend.data.fill(0xaa);
    const driver = await drive(device, variant);
    expect(await blkRequest(driver, 0, [header(T.FLUSH)], [1])).toMatchObject({
      status: BlkStatus.OK,
      len: 1,
    });
    const id = await blkRequest(driver, 0, [header(T.GET_ID)], [20, 1]);
    expect(id.len).toBe(21);
    expect(id.data).toEqual(concat(new TextEncoder().encode('virtkit-disk'), new Uint8Array(8)));
    const discard = await blkRequest(
      driver,
      0,
      [header(T.DISCARD), segments({ sector: 0, sectors: 8 }, { sector: 64, sectors: 8 })],
      [1],
    );
    expect(discard.status).toBe(BlkStatus.OK);
    const zero = await blkRequest(
      driver,
      0,
      [header(T.WRITE_ZEROES), segments({ sector: 16, sectors: 2, flags: 1 })],
      [1],
    );
    expect(zero.status).toBe(BlkStatus.OK);
    expect(backend.data.subarray(8192, 9216).every((b) => b === 0)).toBe(true);
    expect(backend.data[9216]).toBe(0xaa);
    expect((await blkRequest(driver, 0, [header(T.GET_LIFETIME)], [6, 1])).status).toBe(
      BlkStatus.UNSUPP,
    );
    expect(device.stats).toMatchObject({ flush: 1, getId: 1, discard: 1, writeZeroes: 1 });
  });

  it('refuses bad requests with the spec status, counts them, and never writes outside the disk', async () => {
    const { device, backend } = memoryDevice({}, 64 * 1024);
    const driver = await drive(device, variant);
    const before = backend.data.slice();
    const beyond = await blkRequest(
      driver,
      0,
      [header(T.OUT, 127), new Uint8Array(1024).fill(1)],
      [1],
    );
    expect(beyond).toMatchObject({ status: BlkStatus.IOERR, len: 1 });
    const odd = await blkRequest(driver, 0, [header(T.OUT, 0), new Uint8Array(100)], [1]);
    expect(odd.status).toBe(BlkStatus.IOERR);
    const shortId = await blkRequest(driver, 0, [header(T.GET_ID)], [8, 1]);
    expect(shortId.status).toBe(BlkStatus.IOERR);
    // No writable byte at all: used with length 0.
    const { token } = driver.post(0, { readable: [header(T.IN, 0), new Uint8Array(512)] });
    driver.kick(0);
    expect((await driver.wait(0, token)).len).toBe(0);
    expect(backend.data).toEqual(before);
    const violations = driver.controller.violations;
    expect(violations.count('BLK_OUT_OF_RANGE')).toBe(1);
    expect(violations.count('BLK_UNALIGNED')).toBe(1);
    expect(violations.count('BLK_GET_ID_TOO_SHORT')).toBe(1);
    expect(violations.count('BLK_NO_STATUS')).toBe(1);
    expect(driver.status & DeviceStatus.DEVICE_NEEDS_RESET).toBe(0);
    // The device keeps working.
    expect((await blkRequest(driver, 0, [header(T.IN, 0)], [513])).status).toBe(BlkStatus.OK);
  });

  it('serves every queue of a multiqueue device', async () => {
    const { device, backend } = memoryDevice({ queues: 4 });
    const driver = await drive(device, variant);
    expect(driver.controller.negotiatedFeatures & bit(BlkFeature.MQ)).not.toBe(0n);
    const replies = await Promise.all(
      [0, 1, 2, 3].map((q) =>
        blkRequest(driver, q, [header(T.OUT, q * 8), new Uint8Array(512).fill(q + 1)], [1]),
      ),
    );
    expect(replies.map((r) => r.status)).toEqual([0, 0, 0, 0]);
    for (const q of [0, 1, 2, 3]) {
      expect(backend.data[q * 4096]).toBe(q + 1);
      expect(driver.interrupt.usedCount(q)).toBeGreaterThan(0);
    }
  });

  it('completes requests out of order, as their I/O finishes', async () => {
    const backend = new ControlledBackend();
    const device = new BlockDevice({ backend });
    const driver = await drive(device, variant);
    const slow = postBlk(driver, 0, [header(T.IN, 0)], [513]);
    const fast = postBlk(driver, 0, [header(T.IN, 8)], [513]);
    driver.kick(0);
    await backend.waitForHeld(2);
    expect(device.inFlight).toBe(2);
    backend.release(1); // the second request's read finishes first
    const fastReply = await fast.done();
    expect(fastReply.status).toBe(BlkStatus.OK);
    expect(driver.collect(0)).toEqual([]); // the first is still in flight
    backend.release(0);
    expect((await slow.done()).status).toBe(BlkStatus.OK);
  });

  it('completes with IOERR when the backend fails, without blaming the guest', async () => {
    const backend = new ControlledBackend();
    const logs: string[] = [];
    const device = new BlockDevice({ backend, log: (m) => logs.push(m) });
    const driver = await drive(device, variant);
    const request = postBlk(driver, 0, [header(T.OUT, 0), new Uint8Array(512)], [1]);
    driver.kick(0);
    await backend.waitForHeld(1);
    backend.held[0]!.fail(new Error('EIO: disk on fire'));
    expect((await request.done()).status).toBe(BlkStatus.IOERR);
    expect(device.stats.ioErrors).toBe(1);
    expect(driver.controller.violations.count()).toBe(0);
    expect(logs.join()).toMatch(/disk on fire/);
  });
});

describe('BlockDevice completions', () => {
  it('publishes completions that finish together as one batch with one interrupt', async () => {
    const backend = new ControlledBackend();
    const device = new BlockDevice({ backend });
    const driver = await drive(device, { layout: 'split', eventIdx: false, indirect: false });
    const posted = Array.from({ length: 8 }, (_, i) =>
      postBlk(driver, 0, [header(T.IN, i)], [513]),
    );
    driver.kick(0);
    await backend.waitForHeld(8);
    const before = driver.interrupt.usedCount(0);
    for (let i = 7; i >= 0; i--) backend.release(i);
    const replies = await Promise.all(posted.map((p) => p.done()));
    expect(replies.every((r) => r.status === BlkStatus.OK)).toBe(true);
    expect(driver.interrupt.usedCount(0) - before).toBe(1);
  });

  it('publishes requests that complete at once, from several kicks of one turn, with one interrupt', async () => {
    const device = new BlockDevice({ backend: new MemoryBackend({ size: 1 << 20 }) });
    const driver = await drive(device, { layout: 'split', eventIdx: false, indirect: false });
    const before = driver.interrupt.usedCount(0);
    const first = postBlk(driver, 0, [header(T.IN, 0)], [513]);
    driver.kick(0);
    const second = postBlk(driver, 0, [header(T.IN, 1)], [513]);
    driver.kick(0);
    // Done (a memory disk answers at once) but not yet published: that happens after the turn.
    expect(driver.interrupt.usedCount(0)).toBe(before);
    const replies = await Promise.all([first.done(), second.done()]);
    expect(replies.map((r) => r.status)).toEqual([BlkStatus.OK, BlkStatus.OK]);
    expect(driver.interrupt.usedCount(0) - before).toBe(1);
  });

  it('keeps many requests in flight at once instead of serializing them', async () => {
    const backend = new ControlledBackend();
    const device = new BlockDevice({ backend });
    const driver = await drive(device);
    const posted = Array.from({ length: 32 }, (_, i) =>
      postBlk(driver, 0, [header(T.OUT, i), new Uint8Array(512)], [1]),
    );
    driver.kick(0);
    await backend.waitForHeld(32);
    expect(device.inFlight).toBe(32);
    while (backend.held.length > 0) backend.release(backend.held.length - 1);
    await Promise.all(posted.map((p) => p.done()));
  });

  it('settles requests in flight before a reset resolves, and drops their completions', async () => {
    const backend = new ControlledBackend();
    const device = new BlockDevice({ backend });
    const driver = await drive(device);
    postBlk(driver, 0, [header(T.OUT, 0), new Uint8Array(512).fill(9)], [1]);
    driver.kick(0);
    await backend.waitForHeld(1);
    let reset = false;
    const resetting = driver.reset().then(() => {
      reset = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(reset).toBe(false);
    expect(driver.status).not.toBe(0);
    backend.release(0);
    await resetting;
    expect(driver.status).toBe(0);
    expect(device.inFlight).toBe(0);
    // The device works again after re-initialization.
    await driver.initialize();
    backend.auto = true;
    expect((await blkRequest(driver, 0, [header(T.IN, 0)], [513])).data[0]).toBe(9);
  });
});

describe('BlockDevice cache modes', () => {
  /** A backend that records flushes. */
  function flushCounting(): { backend: BlockBackend; flushes: () => number } {
    const inner = new MemoryBackend({ size: MiB });
    let flushes = 0;
    const backend: BlockBackend = {
      capacity: inner.capacity,
      readOnly: false,
      canUnmap: true,
      read: (o, b) => inner.read(o, b),
      write: (o, b) => inner.write(o, b),
      flush: () => {
        flushes++;
      },
      discard: (o, l) => inner.discard(o, l),
      writeZeroes: (o, l, u) => inner.writeZeroes(o, l, u),
      close: () => inner.close(),
    };
    return { backend, flushes: () => flushes };
  }
  const write = (driver: TestDriver) =>
    blkRequest(driver, 0, [header(T.OUT, 0), new Uint8Array(512)], [1]);

  it('does not sync each write in writeback mode (FLUSH negotiated)', async () => {
    const { backend, flushes } = flushCounting();
    const driver = await drive(new BlockDevice({ backend }));
    await write(driver);
    await write(driver);
    expect(flushes()).toBe(0);
  });

  it('syncs every write when FLUSH is not negotiated (§5.2.6.2 case 1)', async () => {
    const { backend, flushes } = flushCounting();
    const device = new BlockDevice({ backend });
    const driver = await drive(device, undefined, bit(BlkFeature.FLUSH));
    expect(device.writethrough).toBe(true);
    await write(driver);
    const zero = await blkRequest(
      driver,
      0,
      [header(T.WRITE_ZEROES), segments({ sector: 0, sectors: 1 })],
      [1],
    );
    expect(zero.status).toBe(BlkStatus.OK);
    expect(flushes()).toBe(2);
  });

  it('lets the driver switch to writethrough and back with CONFIG_WCE', async () => {
    const { backend, flushes } = flushCounting();
    const logs: string[] = [];
    const device = new BlockDevice({ backend, log: (line) => logs.push(line) });
    const driver = await drive(device);
    expect(driver.readConfig(BlkConfig.WRITEBACK, 1)[0]).toBe(1);
    driver.controller.writeConfig(BlkConfig.WRITEBACK, Uint8Array.of(1)); // no change, no log
    driver.controller.writeConfig(BlkConfig.WRITEBACK, Uint8Array.of(0));
    expect(device.writethrough).toBe(true);
    await write(driver);
    expect(flushes()).toBe(1);
    driver.controller.writeConfig(BlkConfig.WRITEBACK, Uint8Array.of(7));
    expect(driver.readConfig(BlkConfig.WRITEBACK, 1)[0]).toBe(1); // normalized
    await write(driver);
    expect(flushes()).toBe(1);
    expect(driver.controller.violations.count()).toBe(0);
    expect(logs).toEqual([
      'the driver switched the write cache to writethrough',
      'the driver switched the write cache to writeback',
    ]);
  });

  it('starts writethrough with write_cache off, and with CONFIG_WCE but no FLUSH', async () => {
    const off = await drive(
      new BlockDevice({ backend: new MemoryBackend({ size: MiB }), writeCache: false }),
    );
    expect(off.readConfig(BlkConfig.WRITEBACK, 1)[0]).toBe(0);
    const device = new BlockDevice({ backend: new MemoryBackend({ size: MiB }) });
    const wceOnly = await drive(device, undefined, bit(BlkFeature.FLUSH));
    expect(wceOnly.readConfig(BlkConfig.WRITEBACK, 1)[0]).toBe(0);
    expect(device.writethrough).toBe(true);
  });

  it('keeps writeback read-only without CONFIG_WCE and counts the attempt', async () => {
    const device = new BlockDevice({ backend: new MemoryBackend({ size: MiB }) });
    const driver = await drive(device, undefined, bit(BlkFeature.CONFIG_WCE));
    driver.controller.writeConfig(BlkConfig.WRITEBACK, Uint8Array.of(0));
    expect(driver.readConfig(BlkConfig.WRITEBACK, 1)[0]).toBe(1);
    expect(device.writethrough).toBe(false);
    expect(driver.controller.violations.count('BLK_WRITEBACK_WITHOUT_WCE')).toBe(1);
  });
});

describe('BlockDevice read-only', () => {
  it('refuses writes with IOERR and never touches the backend', async () => {
    const backend = new MemoryBackend({ size: MiB, readOnly: true });
    backend.data.fill(3);
    const device = new BlockDevice({ backend });
    const driver = await drive(device);
    expect(driver.controller.negotiatedFeatures & bit(BlkFeature.RO)).not.toBe(0n);
    const reply = await blkRequest(driver, 0, [header(T.OUT, 0), new Uint8Array(512)], [1]);
    expect(reply.status).toBe(BlkStatus.IOERR);
    expect(backend.data.every((b) => b === 3)).toBe(true);
    expect(driver.controller.violations.count('BLK_WRITE_READ_ONLY')).toBe(1);
    // Not negotiated on a read-only disk: UNSUPP.
    const zero = await blkRequest(
      driver,
      0,
      [header(T.WRITE_ZEROES), segments({ sector: 0, sectors: 1 })],
      [1],
    );
    expect(zero.status).toBe(BlkStatus.UNSUPP);
    expect((await blkRequest(driver, 0, [header(T.FLUSH)], [1])).status).toBe(BlkStatus.OK);
    expect((await blkRequest(driver, 0, [header(T.IN, 0)], [513])).data[0]).toBe(3);
  });
});

describe('BlockDevice interrupt moderation', () => {
  /** Timers the test fires by hand, on a clock that stands still (no hold reaches its limit). */
  function manualTimers() {
    const timers: { fire: () => void; armed: boolean; closed: boolean }[] = [];
    const moderation: BlockDeviceOptions['moderation'] = {
      now: () => 0,
      timer: (fire) => {
        const timer = { fire, armed: false, closed: false };
        timers.push(timer);
        return {
          start: () => {
            timer.armed = true;
          },
          cancel: () => {
            timer.armed = false;
          },
          close: () => {
            timer.closed = true;
          },
        };
      },
    };
    return {
      moderation,
      timers,
      /** Fires the armed timer, as its expiry would. */
      fire() {
        const timer = timers.find((t) => t.armed);
        if (!timer) throw new Error('no timer armed');
        timer.armed = false;
        timer.fire();
      },
      get armed() {
        return timers.some((t) => t.armed);
      },
    };
  }

  const turn = () => new Promise((resolve) => setImmediate(resolve));

  for (const variant of VARIANTS.filter((v) => !v.indirect)) {
    it(`holds the interrupt while requests keep coming, with kicks off (${name(variant)})`, async () => {
      const timers = manualTimers();
      const { device } = memoryDevice({ moderation: timers.moderation });
      const driver = await drive(device, variant);
      const before = driver.interrupt.usedCount(0);
      const first = postBlk(driver, 0, [header(T.IN, 0)], [513]);
      expect(driver.kick(0)).toBe(true);
      await turn();
      // Completed and published, but the interrupt is held (the first hold is a probe).
      expect(timers.armed).toBe(true);
      expect(driver.interrupt.usedCount(0)).toBe(before);
      expect(driver.collect(0)).toEqual([first.token]);
      // A request while holding: kicks were still on, and this kick turns them off.
      const second = postBlk(driver, 0, [header(T.IN, 1)], [513]);
      expect(driver.kick(0)).toBe(true);
      await turn();
      expect(driver.collect(0)).toEqual([second.token]);
      // More: the device asked for no kicks, the moderator's poll takes them.
      const more = [2, 3].map((sector) => postBlk(driver, 0, [header(T.IN, sector)], [513]));
      expect(driver.kick(0)).toBe(false);
      timers.fire();
      expect(driver.collect(0)).toEqual(more.map((p) => p.token));
      expect(driver.interrupt.usedCount(0)).toBe(before); // they came: still holding
      timers.fire(); // nothing new: one interrupt for all four
      expect(timers.armed).toBe(false);
      expect(driver.interrupt.usedCount(0)).toBe(before + 1);
      // Kicks are on again, and the next completion is held at once (the hold paid off).
      postBlk(driver, 0, [header(T.IN, 4)], [513]);
      expect(driver.kick(0)).toBe(true);
      await turn();
      expect(timers.armed).toBe(true);
      expect(device.moderation).toEqual({ notifications: 1, held: 2, wasted: 0 });
    });
  }

  it('at queue depth 1, interrupts at once after one wasted probe, during the kick', async () => {
    const timers = manualTimers();
    const { device } = memoryDevice({ moderation: timers.moderation });
    const driver = await drive(device);
    const before = driver.interrupt.usedCount(0);
    const first = postBlk(driver, 0, [header(T.IN, 0)], [513]);
    driver.kick(0);
    // Published during the kick (the hold is the moderator's choice, not the event loop's).
    expect(driver.collect(0)).toEqual([first.token]);
    expect(timers.armed).toBe(true);
    timers.fire(); // the probe: nothing arrived, so this hold only cost latency
    expect(driver.interrupt.usedCount(0)).toBe(before + 1);
    expect((await first.done()).status).toBe(BlkStatus.OK);
    const second = postBlk(driver, 0, [header(T.IN, 1)], [513]);
    driver.kick(0);
    // No event-loop turn in between: a driver at queue depth 1 does not wait for one.
    expect(timers.armed).toBe(false);
    expect(driver.interrupt.usedCount(0)).toBe(before + 2);
    expect(driver.collect(0)).toEqual([second.token]);
    expect((await second.done()).status).toBe(BlkStatus.OK);
  });

  it('a reset releases the timer (the held interrupt goes nowhere, as late completions)', async () => {
    const timers = manualTimers();
    const { device } = memoryDevice({ moderation: timers.moderation });
    const driver = await drive(device);
    const before = driver.interrupt.usedCount(0);
    postBlk(driver, 0, [header(T.IN, 0)], [513]);
    driver.kick(0);
    await turn();
    expect(timers.armed).toBe(true);
    await driver.reset();
    expect(timers.armed).toBe(false);
    expect(timers.timers.every((t) => t.closed)).toBe(true);
    expect(driver.interrupt.usedCount(0)).toBe(before);
  });
});

describe('BlockDevice activation failure', () => {
  it('releases the moderation timers it made when a later one cannot be made', async () => {
    const made: { closed: boolean }[] = [];
    const device = new BlockDevice({
      backend: new MemoryBackend({ size: 1 << 20 }),
      queues: 3,
      moderation: {
        timer: () => {
          if (made.length === 2) throw new Error('timerfd_create failed: too many open files');
          const timer = { closed: false };
          made.push(timer);
          return { start: () => {}, cancel: () => {}, close: () => (timer.closed = true) };
        },
      },
    });
    const driver = await drive(device);
    expect(driver.controller.activation.state).toBe('failed');
    await new Promise((resolve) => setImmediate(resolve));
    expect(made).toHaveLength(2);
    expect(made.every((t) => t.closed)).toBe(true);
  });
});
