import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceRegistry, DeviceType, parseDeviceArgument } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { FileBackend } from './backends/file.js';
import { MemoryBackend } from './backends/memory.js';
import { BlkConfig, BlkFeature, BlkRequestType as T } from './constants.js';
import { BlockDevice } from './device.js';
import { blkPlugin, parseSize } from './plugin.js';
import { blkRequest, header } from './test-support.js';

const dir = mkdtempSync(join(tmpdir(), 'virtkit-blk-plugin-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function registry(): DeviceRegistry {
  const r = new DeviceRegistry();
  r.register(blkPlugin);
  return r;
}

describe('blkPlugin', () => {
  it('registers as blk, a block device', () => {
    expect(blkPlugin.meta.name).toBe('blk');
    expect(blkPlugin.deviceType).toBe(DeviceType.BLOCK);
    expect(registry().names()).toEqual(['blk']);
  });

  it('creates a file disk from command-line options', async () => {
    const path = join(dir, 'cli.img');
    writeFileSync(path, new Uint8Array(1 << 20));
    const { type, options } = parseDeviceArgument(
      `blk,path=${path},readonly=on,serial=root-disk,queues=2,queue_size=64,discard=off`,
    );
    const device = (await registry().create(type, options)) as BlockDevice;
    expect(device).toBeInstanceOf(BlockDevice);
    expect(device.backend).toBeInstanceOf(FileBackend);
    expect(device.backend.readOnly).toBe(true);
    expect(device.queues).toEqual([{ maxSize: 64 }, { maxSize: 64 }]);
    expect(device.features & (1n << BigInt(BlkFeature.RO))).not.toBe(0n);
    expect(device.features & (1n << BigInt(BlkFeature.MQ))).not.toBe(0n);
    expect(device.features & (1n << BigInt(BlkFeature.DISCARD))).toBe(0n);
    const driver = await TestDriver.create(device);
    const id = await blkRequest(driver, 1, [header(T.GET_ID)], [20, 1]);
    expect(new TextDecoder().decode(id.data).replace(/\0+$/, '')).toBe('root-disk');
    await device.close();
  });

  it('picks the I/O engine with aio=, threads by default', async () => {
    const path = join(dir, 'aio.img');
    writeFileSync(path, new Uint8Array(1 << 20));
    const plain = (await registry().create('blk', { path })) as BlockDevice;
    expect((plain.backend as FileBackend).aio).toBe('threads');
    await plain.close();
    const { type, options } = parseDeviceArgument(`blk,path=${path},aio=sync`);
    const device = (await registry().create(type, options)) as BlockDevice;
    expect((device.backend as FileBackend).aio).toBe('sync');
    const driver = await TestDriver.create(device);
    const data = new Uint8Array(512).fill(0x5a);
    expect((await blkRequest(driver, 0, [header(T.OUT, 1), data], [1])).status).toBe(0);
    await device.close();
    expect(readFileSync(path)[512]).toBe(0x5a);
    await expect(registry().create('blk', { path, aio: 'uring' })).rejects.toThrow(/aio/);
    await expect(
      registry().create('blk', { backend: 'memory', size: '1M', aio: 'sync' }),
    ).rejects.toThrow(/aio is for the file backend/);
  });

  it('moderates interrupts by default, on a precise timer; moderation=off turns it off', async () => {
    const device = (await registry().create('blk', {
      backend: 'memory',
      size: '1M',
    })) as BlockDevice;
    const driver = await TestDriver.create(device);
    const before = driver.interrupt.usedCount(0);
    // The first completion's interrupt is held for one poll (a probe), then sent by the timer.
    // The driver may see the completion first (it also polls the ring).
    expect((await blkRequest(driver, 0, [header(T.IN, 0)], [513])).status).toBe(0);
    const deadline = Date.now() + 2000;
    while (driver.interrupt.usedCount(0) === before && Date.now() < deadline) {
      await driver.interrupt.next(5);
    }
    expect(driver.interrupt.usedCount(0)).toBe(before + 1);
    expect(device.moderation).toEqual({ notifications: 1, held: 1, wasted: 1 });
    await driver.reset();
    const { type, options } = parseDeviceArgument('blk,backend=memory,size=1M,moderation=off');
    const plain = (await registry().create(type, options)) as BlockDevice;
    expect(plain.moderation).toBeUndefined();
    const plainDriver = await TestDriver.create(plain);
    expect((await blkRequest(plainDriver, 0, [header(T.IN, 0)], [513])).status).toBe(0);
  });

  it('creates an in-memory disk with a size suffix and block sizes', async () => {
    const device = (await registry().create('blk', {
      backend: 'memory',
      size: '4M',
      logical_block_size: '4096',
      physical_block_size: '8192',
      write_cache: 'off',
    })) as BlockDevice;
    expect(device.backend).toBeInstanceOf(MemoryBackend);
    expect(device.backend.capacity).toBe(4 << 20);
    expect(device.config.getU32(BlkConfig.BLK_SIZE)).toBe(4096);
    expect(device.config.getU8(BlkConfig.TOPOLOGY_PHYSICAL_BLOCK_EXP)).toBe(1);
    expect(device.config.getU8(BlkConfig.WRITEBACK)).toBe(0);
  });

  it.each([
    [{}, /needs path/],
    [{ path: 'x.img', size: '1M' }, /size is for backend=memory/],
    [{ backend: 'memory' }, /needs size/],
    [{ backend: 'memory', size: '1M', path: 'x' }, /path is for the file backend/],
    [{ backend: 'memory', size: '1M', direct: 'on' }, /direct is for the file backend/],
    [{ backend: 'memory', size: '1000' }, /not a positive multiple of 512/],
    [{ backend: 'memory', size: '1M', serial: 'a-serial-that-is-too-long' }, /at most 20/],
    [{ backend: 'memory', size: '1M', queue_size: '100' }, /power of two/],
    [{ backend: 'memory', size: '1M', queues: '17' }, /from 1 to 16/],
    [{ backend: 'memory', size: '1M', logical_block_size: '1536' }, /power of two/],
    [
      { backend: 'memory', size: '1M', physical_block_size: '512', logical_block_size: '1024' },
      /physical_block_size/,
    ],
    [{ backend: 'memory', size: '12Q' }, /size/],
    [{ backend: 'memory', size: '99999999999T' }, /not a number of bytes/],
    [{ path: 'x.img', cache: 'none' }, /unknown option 'cache'/],
  ])('refuses %o', async (options, message) => {
    await expect(registry().create('blk', options)).rejects.toThrow(message);
  });

  it('refuses an image whose size is not a multiple of the logical block size', async () => {
    const path = join(dir, 'odd.img');
    writeFileSync(path, new Uint8Array(3 * 512));
    await expect(
      registry().create('blk', { path, logical_block_size: 1024 }),
    ).rejects.toMatchObject({
      code: 'BLK_IMAGE_SIZE',
    });
    expect(readFileSync(path).length).toBe(1536);
  });

  it('parses sizes with binary suffixes', () => {
    expect(parseSize('4096')).toBe(4096);
    expect(parseSize('64k')).toBe(65536);
    expect(parseSize('2G')).toBe(2 ** 31);
    expect(parseSize('1T')).toBe(2 ** 40);
    expect(() => parseSize('1.5G')).toThrow(/not a number of bytes/);
  });
});

describe('README example', () => {
  it('runs as written (with a temp image)', async () => {
    const path = join(dir, 'readme.img');
    writeFileSync(path, new Uint8Array(1 << 20));
    const registry = new DeviceRegistry();
    registry.register(blkPlugin);
    const disk = await registry.create('blk', { path, serial: 'root', queues: 2 });
    const driver = await TestDriver.create(disk);
    const header = (type: number, sector: number) => {
      const bytes = new Uint8Array(16);
      new DataView(bytes.buffer).setUint32(0, type, true);
      new DataView(bytes.buffer).setBigUint64(8, BigInt(sector), true);
      return bytes;
    };
    await driver.send(0, { readable: [header(1, 8), new Uint8Array(512).fill(7)], writable: [1] });
    const { written } = await driver.send(0, { readable: [header(0, 8)], writable: [512, 1] });
    expect(written).toEqual(Uint8Array.of(...new Array(512).fill(7), 0));
    await (disk as BlockDevice).close();
  });
});
