import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceRegistry, DeviceType, parseDeviceArgument } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { describe, expect, it } from 'vitest';
import { MemoryBackend } from './backends/memory.js';
import { StreamBackend } from './backends/stream.js';
import { NetDevice } from './device.js';
import { netPlugin } from './plugin.js';
import { accept, ethernet, header } from './test-support.js';

function registry(): DeviceRegistry {
  const r = new DeviceRegistry();
  r.register(netPlugin);
  return r;
}

async function fromCommandLine(argument: string) {
  const { type, options } = parseDeviceArgument(argument);
  return registry().create(type, options);
}

describe('net plugin', () => {
  it('is named net and creates network devices', () => {
    expect(netPlugin.meta.name).toBe('net');
    expect(netPlugin.deviceType).toBe(DeviceType.NET);
  });

  it.each([
    ['net', /exactly one backend/],
    ['net,tap=vm0,socket=/x', /exactly one backend.*tap, socket/],
    ['net,backend=memory,tap=vm0', /exactly one backend/],
    ['net,backend=memory,listen=on', /listen=on needs socket/],
    ['net,backend=memory,mac=01:00:00:00:00:01', /multicast/],
    ['net,backend=memory,mac=52:54:00:00:01', /mac/],
    ['net,backend=memory,queues=9', /queues/],
    ['net,backend=memory,queues=0', /queues/],
    ['net,backend=memory,mtu=67', /mtu/],
    ['net,backend=disk', /backend/],
    ['net,socket=tcp:nothing', /tcp:HOST:PORT/],
    ['net,tap=has/slash', /tap/],
    ['net,backend=memory,colour=blue', /unknown option 'colour'/],
  ])('refuses %s', async (argument, message) => {
    await expect(fromCommandLine(argument)).rejects.toThrow(message);
  });

  it('creates a memory device from the command line with its options', async () => {
    const device = (await fromCommandLine(
      'net,backend=memory,mac=52:54:00:aa:bb:cc,queues=4,mtu=9000',
    )) as NetDevice;
    expect(device).toBeInstanceOf(NetDevice);
    expect(device.backend).toBeInstanceOf(MemoryBackend);
    expect(device.currentMac).toBe('52:54:00:aa:bb:cc');
    expect(device.maxPairs).toBe(4);
    expect(device.queues).toHaveLength(9);
    expect(device.mtu).toBe(9000);
    // The other end of the pair is the test's wire.
    const wire = (device.backend as MemoryBackend).peer;
    const driver = await TestDriver.create(device, { features: accept(device.features) });
    const frame = ethernet({ dst: Uint8Array.of(0x52, 0x54, 0, 0xaa, 0xbb, 0xcc) });
    await driver.send(1, { readable: [header(), frame] });
    expect(await wire.next()).toEqual(frame);
    await device.close();
  });

  it('opens a stream server from socket=PATH,listen=on', async () => {
    const directory = mkdtempSync(join(tmpdir(), 'virtkit-net-plugin-'));
    try {
      const path = join(directory, 'a.sock');
      const device = (await fromCommandLine(`net,socket=${path},listen=on`)) as NetDevice;
      expect(device.backend).toBeInstanceOf(StreamBackend);
      expect(device.backend.description).toBe(`unix:${path},listen`);
      await device.close();
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });
});
