import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDriver } from '@virtkit/core/testing';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { NetDevice } from '../device.js';
import {
  accept,
  concat,
  ethernet,
  GUEST_MAC,
  header,
  PEER_MAC,
  sleep,
  until,
} from '../test-support.js';
import {
  formatStreamAddress,
  parseStreamAddress,
  STREAM_MAX_FRAME,
  StreamBackend,
} from './stream.js';

const directory = mkdtempSync(join(tmpdir(), 'virtkit-net-stream-'));
let serial = 0;
const socketPath = () => join(directory, `s${serial++}.sock`);
afterAll(() => rmSync(directory, { recursive: true, force: true }));

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
});

function lengthPrefixed(frame: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + frame.length);
  new DataView(out.buffer).setUint32(0, frame.length);
  out.set(frame, 4);
  return out;
}

/** A raw peer socket collecting everything it receives. */
function collect(socket: Socket): { bytes: () => Uint8Array } {
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  return { bytes: () => new Uint8Array(Buffer.concat(chunks)) };
}

async function deviceOn(
  backend: StreamBackend,
  mac: Uint8Array | null = GUEST_MAC,
): Promise<{ device: NetDevice; driver: TestDriver }> {
  const device = new NetDevice({ backend, ...(mac ? { mac } : {}) });
  cleanup.push(() => device.close());
  const driver = await TestDriver.create(device, { features: accept(device.features) });
  return { device, driver };
}

function connectRaw(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path }, () => resolve(socket));
    socket.once('error', reject);
    cleanup.push(() => {
      socket.destroy();
    });
  });
}

describe('stream address parsing', () => {
  it('tells TCP from Unix socket paths', () => {
    expect(parseStreamAddress('127.0.0.1:5555')).toEqual({
      kind: 'tcp',
      host: '127.0.0.1',
      port: 5555,
    });
    expect(parseStreamAddress('[::1]:80')).toEqual({ kind: 'tcp', host: '::1', port: 80 });
    expect(parseStreamAddress('localhost:1')).toEqual({ kind: 'tcp', host: 'localhost', port: 1 });
    expect(parseStreamAddress(':7000')).toEqual({ kind: 'tcp', host: '127.0.0.1', port: 7000 });
    expect(parseStreamAddress('/run/vm.sock')).toEqual({ kind: 'unix', path: '/run/vm.sock' });
    expect(parseStreamAddress('vm.sock')).toEqual({ kind: 'unix', path: 'vm.sock' });
    expect(parseStreamAddress('unix:host:80')).toEqual({ kind: 'unix', path: 'host:80' });
    expect(() => parseStreamAddress('127.0.0.1:70000')).toThrow(/port/);
    expect(() => parseStreamAddress('tcp:nope')).toThrow(/tcp:HOST:PORT/);
    expect(() => parseStreamAddress('')).toThrow(/empty/);
    expect(formatStreamAddress(parseStreamAddress('[::1]:80'))).toBe('tcp:[::1]:80');
  });
});

describe('stream backend over a real Unix socket (QEMU -netdev stream framing)', () => {
  it('frames transmitted frames with a 4-byte big-endian length, byte for byte', async () => {
    const path = socketPath();
    const backend = await StreamBackend.open({ address: path, listen: true });
    const { driver, device } = await deviceOn(backend);
    expect(device.linkUp).toBe(false);
    const peer = await connectRaw(path);
    const received = collect(peer);
    await until(() => device.linkUp, 1000, 'link up');
    const frames = [
      ethernet({ dst: PEER_MAC, payloadLength: 46 }),
      ethernet({ dst: PEER_MAC, payloadLength: 1500 }),
    ];
    for (const frame of frames) await driver.send(1, { readable: [header(), frame] });
    const expected = concat(...frames.map(lengthPrefixed));
    await until(() => received.bytes().length >= expected.length, 1000, 'bytes on the socket');
    expect(received.bytes()).toEqual(expected);
    expect([...received.bytes().subarray(0, 4)]).toEqual([0, 0, 0, 60]);
  });

  it('reassembles frames the peer writes in arbitrary pieces, and ignores empty frames', async () => {
    const path = socketPath();
    const backend = await StreamBackend.open({ address: path, listen: true });
    const { driver } = await deviceOn(backend);
    const peer = await connectRaw(path);
    const frames = [
      ethernet({ payloadLength: 100 }),
      ethernet({ payloadLength: 1400 }),
      ethernet({ payloadLength: 46 }),
    ];
    const stream = concat(
      lengthPrefixed(frames[0]!),
      new Uint8Array(4),
      lengthPrefixed(frames[1]!),
      lengthPrefixed(frames[2]!),
    );
    const tokens = [0, 1, 2].map(() => driver.post(0, { writable: [1526] }).token);
    driver.kick(0, true);
    // 1, 2, 3, ... byte pieces: every split of the length prefix and the frame is exercised.
    for (let offset = 0, size = 1; offset < stream.length; offset += size, size = (size % 7) + 1) {
      peer.write(stream.subarray(offset, offset + size));
      if (size === 7) await sleep(1);
    }
    for (const [i, token] of tokens.entries()) {
      expect((await driver.wait(0, token)).written.subarray(12)).toEqual(frames[i]);
    }
    expect(backend.stats.emptyFrames).toBe(1);
  });

  it('connects as a client and carries frames both ways', async () => {
    const path = socketPath();
    let peer: Socket | undefined;
    const server: Server = createServer((socket) => {
      peer = socket;
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    cleanup.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const backend = await StreamBackend.open({ address: path, reconnectMs: 20 });
    const { driver, device } = await deviceOn(backend);
    await until(() => peer !== undefined && device.linkUp, 2000, 'client connected');
    cleanup.push(() => {
      peer?.destroy();
    });
    const received = collect(peer!);
    const out = ethernet({ dst: PEER_MAC });
    await driver.send(1, { readable: [header(), out] });
    await until(() => received.bytes().length === 4 + out.length, 1000, 'frame at the server');
    expect(received.bytes()).toEqual(lengthPrefixed(out));
    const [token] = [driver.post(0, { writable: [1526] }).token];
    driver.kick(0, true);
    const back = ethernet({ payloadLength: 333 });
    peer!.write(lengthPrefixed(back));
    expect((await driver.wait(0, token!)).written.subarray(12)).toEqual(back);
  });

  it('lets two devices talk: one listens, one connects', async () => {
    const path = socketPath();
    // Derived MACs: the same path as server and as client gives two different addresses.
    const a = await deviceOn(await StreamBackend.open({ address: path, listen: true }), null);
    const b = await deviceOn(await StreamBackend.open({ address: path, reconnectMs: 20 }), null);
    await until(() => a.device.linkUp && b.device.linkUp, 2000, 'both links up');
    expect(a.device.mac).not.toEqual(b.device.mac);
    for (const [from, to] of [
      [a, b],
      [b, a],
    ] as const) {
      const token = to.driver.post(0, { writable: [1526] }).token;
      to.driver.kick(0, true);
      const frame = ethernet({ dst: GUEST_MAC, payloadLength: 500 });
      await from.driver.send(1, { readable: [header(), frame] });
      expect((await to.driver.wait(0, token)).written.subarray(12)).toEqual(frame);
    }
  });

  it('pauses the socket while the guest has no buffers, losing nothing', async () => {
    const path = socketPath();
    const backend = await StreamBackend.open({ address: path, listen: true, maxQueuedFrames: 8 });
    const { driver, device } = await deviceOn(backend);
    const peer = await connectRaw(path);
    const frames = Array.from({ length: 100 }, (_, i) => ethernet({ payloadLength: 46 + i }));
    peer.write(concat(...frames.map(lengthPrefixed)));
    await until(() => backend.paused, 1000, 'socket paused');
    expect(device.stats.rxFrames).toBe(0);
    const got: Uint8Array[] = [];
    while (got.length < frames.length) {
      const tokens = Array.from({ length: 16 }, () => driver.post(0, { writable: [1526] }).token);
      driver.kick(0, true);
      for (const token of tokens) {
        if (got.length === frames.length) break;
        got.push((await driver.wait(0, token)).written.subarray(12));
      }
    }
    expect(got).toEqual(frames);
    expect(backend.paused).toBe(false);
    expect(device.stats.rxDroppedSize + device.stats.rxErrors).toBe(0);
  });

  it('stops taking transmit buffers while the peer does not read, and resumes when it does', async () => {
    const path = socketPath();
    const backend = await StreamBackend.open({ address: path, listen: true });
    const device = new NetDevice({ backend, mac: GUEST_MAC, mtu: 65535 });
    cleanup.push(() => device.close());
    const driver = await TestDriver.create(device, { features: accept(device.features) });
    const peer = await connectRaw(path);
    peer.pause(); // the peer reads nothing: the kernel's socket buffers fill, then Node's
    await until(() => device.linkUp, 1000, 'link up');
    const frame = ethernet({ dst: PEER_MAC, payloadLength: 60_000 });
    const total = 200; // 12 MB: far more than the socket buffers (about 2 × 208 KiB) hold
    for (let i = 0; i < total; i++) driver.post(1, { readable: [header(), frame] });
    driver.kick(1, true);
    await sleep(100);
    // Unbounded buffering would take (and complete) every chain at once. With backpressure the
    // device stops at the first write Node reports as over its high-water mark: the guest's
    // remaining buffers wait in the ring.
    const taken = driver.collect(1).length;
    expect(taken).toBeGreaterThan(0);
    expect(taken).toBeLessThan(30);
    expect(device.stats.txFrames).toBe(taken);
    const received = collect(peer);
    peer.resume();
    const bytes = total * (4 + frame.length);
    await until(() => received.bytes().length >= bytes, 10_000, 'every frame at the peer');
    expect(received.bytes().length).toBe(bytes);
    await until(() => device.stats.txFrames === total, 1000, 'every chain completed');
    expect(device.stats.txDroppedLink + device.stats.txErrors).toBe(0);
  });

  it('drops a peer that sends an impossible length, and serves one peer at a time', async () => {
    const path = socketPath();
    const backend = await StreamBackend.open({ address: path, listen: true });
    const { device } = await deviceOn(backend);
    const first = await connectRaw(path);
    await until(() => device.linkUp, 1000, 'link up');
    const second = await connectRaw(path);
    await new Promise<void>((resolve) => second.once('close', () => resolve()));
    expect(backend.stats.refused).toBe(1);
    const closed = new Promise<void>((resolve) => first.once('close', () => resolve()));
    const bad = new Uint8Array(4);
    new DataView(bad.buffer).setUint32(0, STREAM_MAX_FRAME + 1);
    first.write(bad);
    await closed;
    expect(backend.stats.framingErrors).toBe(1);
    await until(() => !device.linkUp, 1000, 'link down');
    // The server takes the next peer.
    await connectRaw(path);
    await until(() => device.linkUp, 1000, 'link up again');
    expect(backend.stats.connections).toBe(2);
  });

  it('reconnects after the server goes away and comes back', async () => {
    const path = socketPath();
    const server = await StreamBackend.open({ address: path, listen: true });
    const client = await StreamBackend.open({ address: path, reconnectMs: 20 });
    cleanup.push(() => client.close());
    await until(() => client.linkUp, 2000, 'connected');
    await server.close();
    await until(() => !client.linkUp, 2000, 'disconnected');
    const again = await StreamBackend.open({ address: path, listen: true });
    cleanup.push(() => again.close());
    await until(() => client.linkUp && again.linkUp, 3000, 'reconnected');
    expect(client.stats.connections).toBe(2);
  });

  it('keeps retrying a missing server with the link down, saying so once', async () => {
    const messages: string[] = [];
    const client = await StreamBackend.open({
      address: socketPath(),
      reconnectMs: 5,
      log: (message) => messages.push(message),
    });
    cleanup.push(() => client.close());
    await sleep(60);
    expect(client.linkUp).toBe(false);
    expect(messages).toHaveLength(1);
    expect(messages[0]).toMatch(/ENOENT.*retrying/);
    expect(client.send(0, [ethernet()])).toBe('dropped');
  });

  it('reports an address in use when listening', async () => {
    const path = socketPath();
    const first = await StreamBackend.open({ address: path, listen: true });
    cleanup.push(() => first.close());
    await expect(StreamBackend.open({ address: path, listen: true })).rejects.toMatchObject({
      code: 'NET_BACKEND',
    });
  });

  it('listens on TCP loopback as well', async () => {
    const backend = await StreamBackend.open({ address: '127.0.0.1:0', listen: true });
    cleanup.push(() => backend.close());
    const port = backend.localPort!;
    expect(port).toBeGreaterThan(0);
    const peer = await new Promise<Socket>((resolve) => {
      const s = createConnection({ host: '127.0.0.1', port }, () => resolve(s));
    });
    cleanup.push(() => {
      peer.destroy();
    });
    await until(() => backend.linkUp, 1000, 'tcp link up');
    peer.write(lengthPrefixed(ethernet()));
    await until(() => backend.receive() !== null, 1000, 'frame over tcp');
  });
});
