/**
 * The device as Linux's virtio_blk drives it: drivers/block/virtio_blk.c and
 * include/uapi/linux/virtio_blk.h of Debian's 6.1.192 and 6.12.117, the guest kernels Virtkit
 * boots. Values are written out literally here (not taken from constants.ts), so a transcription
 * mistake fails.
 */

import { TestDriver } from '@virtkit/core/testing';
import { describe, expect, it } from 'vitest';
import { MemoryBackend } from './backends/memory.js';
import {
  BlkConfig,
  BlkFeature,
  BlkRequestType,
  BlkStatus,
  DEVICE_ID_BYTES,
  WRITE_ZEROES_FLAG_UNMAP,
} from './constants.js';
import { BlockDevice } from './device.js';
import { blkRequest, header, segments } from './test-support.js';

/** `req_get_ioprio()` of a best-effort request at level 4: class 2 << 13 | 4. */
const IOPRIO = (2 << 13) | 4;

describe('Linux virtio_blk ABI (include/uapi/linux/virtio_blk.h)', () => {
  it('has the feature bits, request types, status values and sizes Linux uses', () => {
    expect(BlkFeature).toEqual({
      SIZE_MAX: 1,
      SEG_MAX: 2,
      GEOMETRY: 4,
      RO: 5,
      BLK_SIZE: 6,
      FLUSH: 9,
      TOPOLOGY: 10,
      CONFIG_WCE: 11,
      MQ: 12,
      DISCARD: 13,
      WRITE_ZEROES: 14,
      LIFETIME: 15,
      SECURE_ERASE: 16,
      ZONED: 17,
    });
    expect(BlkRequestType).toMatchObject({
      IN: 0,
      OUT: 1,
      FLUSH: 4,
      GET_ID: 8,
      GET_LIFETIME: 10,
      DISCARD: 11,
      WRITE_ZEROES: 13,
      SECURE_ERASE: 14,
    });
    expect(BlkStatus).toEqual({ OK: 0, IOERR: 1, UNSUPP: 2 });
    expect(DEVICE_ID_BYTES).toBe(20); // VIRTIO_BLK_ID_BYTES
    expect(WRITE_ZEROES_FLAG_UNMAP).toBe(1); // VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
    // struct virtio_blk_config offsets virtblk_probe reads (offsetof in the uapi struct).
    expect(BlkConfig).toMatchObject({
      CAPACITY: 0,
      SIZE_MAX: 8,
      SEG_MAX: 12,
      BLK_SIZE: 20,
      TOPOLOGY_PHYSICAL_BLOCK_EXP: 24,
      TOPOLOGY_MIN_IO_SIZE: 26,
      WRITEBACK: 32,
      NUM_QUEUES: 34,
      MAX_DISCARD_SECTORS: 36,
      MAX_DISCARD_SEG: 40,
      DISCARD_SECTOR_ALIGNMENT: 44,
      MAX_WRITE_ZEROES_SECTORS: 48,
      MAX_WRITE_ZEROES_SEG: 52,
      WRITE_ZEROES_MAY_UNMAP: 56,
    });
  });
});

describe('the config space as virtblk_probe reads it', () => {
  it.each([4, 16, 128, 256, 1024])(
    'seg_max leaves room for header and status without indirect descriptors (queue size %i)',
    (queueSize) => {
      // Linux puts seg_max data segments plus the header and the status in one chain.
      const device = new BlockDevice({ backend: new MemoryBackend({ size: 1 << 20 }), queueSize });
      const segMax = device.config.getU32(BlkConfig.SEG_MAX);
      expect(segMax).toBeGreaterThanOrEqual(1);
      expect(segMax + 2).toBeLessThanOrEqual(queueSize);
    },
  );

  it('announces a blk_size Linux accepts by default (512, at most a 4 KiB page)', () => {
    // blk_validate_block_size refuses anything above PAGE_SIZE: the probe would fail.
    const device = new BlockDevice({ backend: new MemoryBackend({ size: 1 << 20 }) });
    expect(device.config.getU32(BlkConfig.BLK_SIZE)).toBe(512);
    // max_discard_seg is capped by Linux at MAX_DISCARD_SEGMENTS (256); ours fits under it.
    expect(device.config.getU32(BlkConfig.MAX_DISCARD_SEG)).toBeLessThanOrEqual(256);
    expect(device.config.getU32(BlkConfig.MAX_DISCARD_SEG)).toBeGreaterThan(1);
  });
});

describe('multiqueue as init_vq sets it up', () => {
  it('serves the queues a guest with fewer CPUs than num_queues sets up, and ignores the rest', async () => {
    // init_vq: num_vqs = min(num_queues, nr_cpu_ids); the other queues are never enabled.
    const backend = new MemoryBackend({ size: 1 << 20 });
    const device = new BlockDevice({ backend, queues: 4 });
    const driver = await TestDriver.create(device, { deferDriverOk: true });
    expect(driver.readConfig(BlkConfig.NUM_QUEUES, 2)).toEqual(Uint8Array.of(4, 0));
    for (const index of [2, 3]) expect(driver.controller.writeQueueReady(index, false)).toBe(true);
    await driver.start();
    const replies = await Promise.all(
      [0, 1].map((q) =>
        blkRequest(driver, q, [header(1, q * 8), new Uint8Array(512).fill(q + 1)], [1]),
      ),
    );
    expect(replies.map((r) => r.status)).toEqual([0, 0]);
    expect([backend.data[0], backend.data[4096]]).toEqual([1, 2]);
    device.queueNotify(3); // a stray notification of a queue that was never enabled
    expect(driver.controller.violations.count()).toBe(0);
    await driver.reset();
  });
});

describe('requests as virtblk_setup_cmd and virtblk_add_req build them', () => {
  async function linuxDisk() {
    const backend = new MemoryBackend({ size: 1 << 20 });
    backend.data.fill(0x5a);
    const device = new BlockDevice({ backend, serial: 'linux-disk' });
    const driver = await TestDriver.create(device);
    return { backend, device, driver };
  }

  it('reads and writes page-sized segments with the I/O priority in the reserved field', async () => {
    const { backend, driver } = await linuxDisk();
    // Header, then the bio's pages as separate segments, then the 1-byte status on its own.
    const pages = [new Uint8Array(4096).fill(1), new Uint8Array(4096).fill(2)];
    const write = await blkRequest(driver, 0, [header(1, 64, IOPRIO), ...pages], [1]);
    expect(write).toMatchObject({ status: 0, len: 1 });
    expect(backend.data[64 * 512]).toBe(1);
    expect(backend.data[64 * 512 + 4096]).toBe(2);
    const read = await blkRequest(driver, 0, [header(0, 64, IOPRIO)], [4096, 4096, 1]);
    expect(read.status).toBe(0);
    expect(read.len).toBe(8192 + 1);
    expect(read.data.subarray(0, 4096).every((b) => b === 1)).toBe(true);
    expect(read.data.subarray(4096).every((b) => b === 2)).toBe(true);
    expect(driver.controller.violations.count()).toBe(0);
  });

  it('flushes (sector 0, no data) and answers GET_ID into a 20-byte buffer', async () => {
    const { driver } = await linuxDisk();
    expect(await blkRequest(driver, 0, [header(4, 0, IOPRIO)], [1])).toMatchObject({
      status: 0,
      len: 1,
    });
    // virtblk_get_id: blk_rq_map_kern(id_str, VIRTIO_BLK_ID_BYTES), then the status byte.
    const id = await blkRequest(driver, 0, [header(8)], [20, 1]);
    expect(id.status).toBe(0);
    expect(new TextDecoder().decode(id.data).replace(/\0+$/, '')).toBe('linux-disk');
  });

  it('takes multi-range DISCARD (flags 0) and WRITE_ZEROES with and without UNMAP', async () => {
    const { backend, driver } = await linuxDisk();
    // With max_discard_seg > 1 Linux sends one range per bio, the ranges as one special payload.
    const discard = await blkRequest(
      driver,
      0,
      [header(11), segments({ sector: 8, sectors: 8 }, { sector: 100, sectors: 16 })],
      [1],
    );
    expect(discard.status).toBe(0);
    // REQ_OP_WRITE_ZEROES: unmap unless REQ_NOUNMAP, one range.
    for (const flags of [1, 0]) {
      const zeroes = await blkRequest(
        driver,
        0,
        [header(13), segments({ sector: 200 + flags * 8, sectors: 8, flags })],
        [1],
      );
      expect(zeroes.status).toBe(0);
    }
    for (const start of [200, 208]) {
      expect(backend.data.subarray(start * 512, (start + 8) * 512).every((b) => b === 0)).toBe(
        true,
      );
    }
    expect(backend.data[216 * 512]).toBe(0x5a);
    expect(driver.controller.violations.count()).toBe(0);
  });
});
