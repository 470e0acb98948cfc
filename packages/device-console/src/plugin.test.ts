import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DeviceRegistry, parseDeviceArgument } from '@virtkit/core';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConsoleFeature } from './constants.js';
import type { ConsoleDevice } from './device.js';
import { consolePlugin } from './plugin.js';
import { GuestConsole } from './test-support.js';

let dir: string;
let registry: DeviceRegistry;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'virtkit-console-'));
  registry = new DeviceRegistry();
  registry.register(consolePlugin);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Creates a device from a command-line argument, as `virtkit --device ...` does. */
async function fromCommandLine(argument: string) {
  const { type, options } = parseDeviceArgument(argument);
  return (await registry.create(type, options)) as ConsoleDevice;
}

describe('console plugin', () => {
  it('is registered as console, device type 3', () => {
    expect(registry.get('console')?.deviceType).toBe(3);
  });

  it('requires exactly one of stdio, file and socket', async () => {
    await expect(fromCommandLine('console')).rejects.toThrow(
      'console: choose where port 0 goes: stdio, file=PATH or socket=PATH',
    );
    await expect(fromCommandLine(`console,stdio,file=${join(dir, 'a')}`)).rejects.toThrow(
      'console: choose one of stdio, file and socket, not stdio and file',
    );
    await expect(
      fromCommandLine(`console,file=${join(dir, 'a')},socket=${join(dir, 's')}`),
    ).rejects.toThrow(/not file and socket/);
    await expect(fromCommandLine('console,file=')).rejects.toThrow(/file= needs a path/);
    await expect(fromCommandLine('console,stdio,colour=red')).rejects.toThrow(
      /unknown option 'colour'/,
    );
  });

  it('checks the port name and the port count', async () => {
    await expect(fromCommandLine('console,stdio,name=a/b')).rejects.toThrow(/port name 'a\/b'/);
    await expect(fromCommandLine('console,stdio,ports=0')).rejects.toThrow(/ports/);
    await expect(fromCommandLine('console,stdio,ports=512')).rejects.toThrow(/ports/);
  });

  it('creates a file console that appends the guest output', async () => {
    const path = join(dir, 'guest.log');
    const device = await fromCommandLine(`console,file=${path}`);
    expect(device.multiport).toBe(false);
    const guest = await GuestConsole.create(device);
    await guest.write(0, 'from the command line');
    await device.close();
    expect(await readFile(path, 'utf8')).toBe('from the command line');
  });

  it('creates a multiport socket console with a named port 0', async () => {
    const device = await fromCommandLine(`console,socket=${join(dir, 'c.sock')},ports=4,name=main`);
    expect(device.maxPorts).toBe(4);
    expect(device.features & (1n << BigInt(ConsoleFeature.MULTIPORT))).not.toBe(0n);
    expect(device.queues).toHaveLength(10);
    const guest = await GuestConsole.create(device);
    await guest.probe();
    expect(guest.ports.get(0)).toMatchObject({ console: true, name: 'main' });
    await device.close();
  });

  it('reports a socket it cannot create', async () => {
    await expect(
      fromCommandLine(`console,socket=${join(dir, 'missing', 'c.sock')}`),
    ).rejects.toThrow(/cannot listen on/);
  });
});
