import { spawnSync } from 'node:child_process';
import { lstat, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ControlEvent } from '../constants.js';
import { ConsoleDevice } from '../device.js';
import { GuestConsole, until } from '../test-support.js';
import { SocketBackend } from './socket.js';

let dir: string;
const clients: Socket[] = [];
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'virtkit-console-'));
});
afterEach(async () => {
  for (const client of clients.splice(0)) client.destroy();
  await rm(dir, { recursive: true, force: true });
});

/** Connects a client that collects what it receives. */
async function client(path: string) {
  const socket = connect(path);
  clients.push(socket);
  const received: Buffer[] = [];
  let closed = false;
  socket.on('data', (chunk: Buffer) => received.push(chunk));
  socket.on('close', () => {
    closed = true;
  });
  socket.on('error', () => {});
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return {
    socket,
    text: () => Buffer.concat(received).toString(),
    get closed() {
      return closed;
    },
  };
}

describe('SocketBackend on a real Unix socket', () => {
  it('gives the port to the first client, with PORT_OPEN following the connection', async () => {
    const path = join(dir, 'console.sock');
    const backend = await SocketBackend.listen(path);
    const device = new ConsoleDevice({ backend, maxPorts: 2 });
    const guest = await GuestConsole.create(device);
    await guest.probe();
    expect(guest.ports.get(0)!.hostConnected).toBe(false);

    await guest.write(0, 'before anyone listens');
    expect(device.port(0)!.stats.outputDropped).toBe(21);

    const first = await client(path);
    await until(() => device.port(0)!.hostConnected, 'the connection');
    await guest.settle();
    expect(guest.ports.get(0)!.hostConnected).toBe(true);

    await guest.write(0, 'hello client');
    await until(() => first.text() === 'hello client', 'guest output at the client');

    guest.postReceive(0, 1, 64);
    first.socket.write('hello guest');
    await until(() => device.port(0)!.stats.bytesToGuest === 11, 'client input in the guest');
    expect(await guest.takeReceived(0)).toBe('hello guest');

    const second = await client(path);
    await until(() => second.closed, 'the second client to be refused');
    expect(backend.refused).toBe(1);

    first.socket.destroy();
    await until(() => !device.port(0)!.hostConnected, 'the disconnection');
    await guest.settle();
    expect(guest.ports.get(0)!.hostConnected).toBe(false);
    const opens = guest.received.filter((m) => m.event === ControlEvent.PORT_OPEN && m.id === 0);
    expect(opens.map((m) => m.value)).toEqual([1, 0]);

    // The next client gets the port.
    const third = await client(path);
    await until(() => backend.clientConnected, 'the next client');
    await guest.write(0, 'again');
    await until(() => third.text() === 'again', 'output at the next client');

    await device.close();
    await until(() => third.closed, 'the client to be disconnected at close');
    await expect(stat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('holds client input until the guest posts buffers, dropping nothing', async () => {
    const path = join(dir, 'console.sock');
    const device = new ConsoleDevice({ backend: await SocketBackend.listen(path) });
    const guest = await GuestConsole.create(device);
    const peer = await client(path);
    await until(() => device.port(0)!.hostConnected, 'the connection');
    peer.socket.write('x'.repeat(1000));
    await new Promise((resolve) => setTimeout(resolve, 20));
    // One chunk may be held by the port; the rest stays in the socket.
    expect(device.port(0)!.stats.bytesToGuest).toBe(0);
    guest.postReceive(0, 32, 64);
    await until(() => device.port(0)!.stats.bytesToGuest === 1000, 'all input');
    expect(await guest.takeReceived(0)).toBe('x'.repeat(1000));
    expect(device.port(0)!.stats.inputDropped).toBe(0);
    await device.close();
  });

  it('replaces a stale socket but never another kind of file', async () => {
    const stale = join(dir, 'stale.sock');
    // A VMM that exits without closing its server leaves the socket file behind.
    const leftover = spawnSync(process.execPath, [
      '-e',
      `require('node:net').createServer().listen(${JSON.stringify(stale)}, () => process.exit(0))`,
    ]);
    expect(leftover.status).toBe(0);
    expect((await lstat(stale)).isSocket()).toBe(true);
    await expect(SocketBackend.listen(stale, { replaceStale: false })).rejects.toMatchObject({
      code: 'CONSOLE_BACKEND',
    });
    const backend = await SocketBackend.listen(stale);
    const peer = await client(stale);
    expect(peer.closed).toBe(false);
    await backend.close();
    await writeFile(join(dir, 'keep'), 'data');
    await expect(SocketBackend.listen(join(dir, 'keep'))).rejects.toMatchObject({
      code: 'CONSOLE_BACKEND',
    });
    expect(await readFile(join(dir, 'keep'), 'utf8')).toBe('data');
  });
});
