// The README's example, run as written (through the package's public exports).
import { DeviceRegistry } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { expect, it } from 'vitest';
import { type MemoryBackend, type NetDevice, netPlugin } from './index.js';

it('runs the README example', async () => {
  const registry = new DeviceRegistry();
  registry.register(netPlugin);
  const nic = (await registry.create('net', {
    backend: 'memory',
    mac: '52:54:00:12:34:56',
  })) as NetDevice;
  const wire = (nic.backend as MemoryBackend).peer;

  const driver = await TestDriver.create(nic);
  const frame = new Uint8Array(60);
  frame.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56], 0);
  const rx = driver.post(0, { writable: [1526] });
  driver.kick(0);
  wire.inject(frame);
  const { written } = await driver.wait(0, rx.token);
  expect(written.subarray(0, 12)).toEqual(Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0));
  expect(written.subarray(12)).toEqual(frame);

  await driver.send(1, { readable: [new Uint8Array(12), frame] });
  const sent = await wire.next();
  expect(sent).toEqual(frame);
  await nic.close();
});
