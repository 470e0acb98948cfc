import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { TestDriver } from '@virtkit/core/testing';
import { TUN_F_CSUM, TUN_F_TSO_ECN, TUN_F_TSO4, TUN_F_TSO6 } from '@virtkit/linux';
import { afterAll, describe, expect, it } from 'vitest';
import { NetFeature } from '../constants.js';
import { NetDevice } from '../device.js';
import { accept, ethernet, GUEST_MAC, header, PEER_MAC } from '../test-support.js';
import { TapBackend, tunOffloadFlags } from './tap.js';

// The TAP interface is created by the backend, then moved into a network namespace of the
// test's own, where a small python3 AF_PACKET program plays the other host. Nothing is left on
// the machine's own interfaces: deleting the namespace (and closing the descriptor) removes it.
const namespace = `virtkit-net-test-${process.pid}`;
const ETHERTYPE = 0x88b5; // IEEE 802 local experimental: nothing else on the link uses it

function probe(): string | undefined {
  if (process.platform !== 'linux') return 'TAP needs Linux';
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun does not exist';
  try {
    execFileSync('python3', ['-c', 'import socket; socket.AF_PACKET'], { stdio: 'ignore' });
  } catch {
    return 'python3 with AF_PACKET is needed to play the peer';
  }
  try {
    execFileSync('ip', ['netns', 'add', namespace], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (error) {
    const message = (error as { stderr?: Buffer }).stderr?.toString().trim() || String(error);
    return `cannot create a network namespace (${message})`;
  }
  // No IPv6 in the namespace: the kernel's neighbour discovery would add frames of its own.
  for (const scope of ['all', 'default']) {
    execFileSync('ip', [
      'netns',
      'exec',
      namespace,
      'sysctl',
      '-qw',
      `net.ipv6.conf.${scope}.disable_ipv6=1`,
    ]);
  }
  return undefined;
}

const unavailable = probe();
if (unavailable) console.warn(`device-net TAP tests skipped: ${unavailable}`);

afterAll(() => {
  if (!unavailable) execFileSync('ip', ['netns', 'delete', namespace]);
});

function inNamespace(...command: string[]): string {
  return execFileSync('ip', ['netns', 'exec', namespace, ...command], { encoding: 'utf8' });
}

// The peer: `recv IFACE` prints the hex of the first frame of our ethertype (after "ready");
// `send IFACE HEX` sends one frame.
const PEER = `
import socket, sys, select
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(${ETHERTYPE}))
s.bind((sys.argv[2], 0))
if sys.argv[1] == 'send':
    s.send(bytes.fromhex(sys.argv[3]))
else:
    print('ready', flush=True)
    seen = []
    while len(seen) < int(sys.argv[3]):
        ready, _, _ = select.select([s], [], [], 5)
        if not ready:
            sys.exit(2)
        data, address = s.recvfrom(65535)
        if address[2] != socket.PACKET_OUTGOING:
            seen.append(data.hex())
    print(' '.join(seen), flush=True)
`;

/** Starts a capture of `count` frames in the namespace; resolves once it listens. */
async function capture(iface: string, count: number): Promise<() => Promise<string[]>> {
  const child: ChildProcess = spawn(
    'ip',
    ['netns', 'exec', namespace, 'python3', '-c', PEER, 'recv', iface, String(count)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  let errors = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr!.on('data', (chunk: Buffer) => {
    errors += chunk.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const started = Date.now();
  while (!output.startsWith('ready')) {
    if (Date.now() - started > 5000 || child.exitCode !== null) {
      throw new Error(`capture did not start: ${errors}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return async () => {
    const code = await exited;
    if (code !== 0) throw new Error(`capture exited with ${code}: ${errors}`);
    return output.split('\n')[1]!.trim().split(' ');
  };
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

async function setUp(queues: number): Promise<{
  backend: TapBackend;
  device: NetDevice;
  driver: TestDriver;
  iface: string;
}> {
  const iface = `vkn${process.pid % 100000}q${queues}`;
  const backend = TapBackend.open({ name: iface, queues });
  const device = new NetDevice({ backend, mac: GUEST_MAC, queuePairs: queues });
  try {
    execFileSync('ip', ['link', 'set', backend.name, 'netns', namespace]);
    inNamespace('ip', 'link', 'set', backend.name, 'up');
  } catch (error) {
    await device.close();
    throw error;
  }
  const driver = await TestDriver.create(device, { features: accept(device.features) });
  // Only frames for the guest's own address, so nothing the kernel sends on its own gets in.
  const ctrl = 2 * queues;
  const ack = await driver.send(ctrl, { readable: [Uint8Array.of(0, 0, 0)], writable: [1] });
  expect(ack.written[0]).toBe(0);
  return { backend, device, driver, iface: backend.name };
}

describe.skipIf(unavailable !== undefined)('TAP backend in a network namespace', () => {
  it('carries frames from the guest to the TAP and back', async () => {
    const { backend, device, driver, iface } = await setUp(1);
    try {
      // The guest negotiated every receive offload: the TAP was told so (TUNSETOFFLOAD).
      expect(backend.offloadFlags).toBe(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN);

      const collected = await capture(iface, 1);
      const out = ethernet({ dst: PEER_MAC, src: GUEST_MAC, type: ETHERTYPE, payloadLength: 300 });
      await driver.send(1, { readable: [header(), out] });
      expect(await collected()).toEqual([hex(out)]);

      const token = driver.post(0, { writable: [1526] }).token;
      driver.kick(0, true);
      const back = ethernet({ dst: GUEST_MAC, src: PEER_MAC, type: ETHERTYPE, payloadLength: 200 });
      inNamespace('python3', '-c', PEER, 'send', iface, hex(back));
      const reply = await driver.wait(0, token);
      expect(reply.written.subarray(0, 10)).toEqual(new Uint8Array(10));
      expect(reply.written.subarray(12)).toEqual(back);
      expect(device.stats).toMatchObject({ txFrames: 1, rxFrames: 1 });
    } finally {
      await device.close();
    }
  });

  it('opens one queue per pair (IFF_MULTI_QUEUE) and sends from every transmit queue', async () => {
    const { device, driver, iface, backend } = await setUp(2);
    try {
      expect(backend.channels).toBe(2);
      const ctrl = 4;
      const pairs = await driver.send(ctrl, {
        readable: [Uint8Array.of(4, 0, 2, 0)],
        writable: [1],
      });
      expect(pairs.written[0]).toBe(0);
      const collected = await capture(iface, 2);
      const frames = [0, 1].map((i) =>
        ethernet({ dst: PEER_MAC, type: ETHERTYPE, payloadLength: 100 + i }),
      );
      await driver.send(1, { readable: [header(), frames[0]!] });
      await driver.send(3, { readable: [header(), frames[1]!] });
      expect((await collected()).sort()).toEqual(frames.map(hex).sort());
      const tokens = [0, 2].map((queue) => {
        const { token } = driver.post(queue, { writable: [1526] });
        driver.kick(queue, true);
        return { queue, token };
      });
      const back = ethernet({ dst: GUEST_MAC, type: ETHERTYPE, payloadLength: 64 });
      inNamespace('python3', '-c', PEER, 'send', iface, hex(back));
      // The kernel picks the queue; the frame arrives on exactly one of the two.
      const deadline = Date.now() + 3000;
      let arrived: Uint8Array | undefined;
      while (!arrived && Date.now() < deadline) {
        for (const { queue, token } of tokens) {
          if (driver.collect(queue).length > 0) {
            arrived = (await driver.wait(queue, token)).written;
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      expect(arrived?.subarray(12)).toEqual(back);
      expect(device.stats.rxFrames).toBe(1);
      expect(backend.attachedChannels).toEqual([true, true]);
      // Back to one pair: the second queue is detached (TUNSETQUEUE), so the kernel no longer
      // steers received frames to it; re-attaching it must succeed too (a failed ioctl would
      // leave the state unchanged).
      const one = await driver.send(ctrl, { readable: [Uint8Array.of(4, 0, 1, 0)], writable: [1] });
      expect(one.written[0]).toBe(0);
      expect(backend.attachedChannels).toEqual([true, false]);
      const two = await driver.send(ctrl, { readable: [Uint8Array.of(4, 0, 2, 0)], writable: [1] });
      expect(two.written[0]).toBe(0);
      expect(backend.attachedChannels).toEqual([true, true]);
    } finally {
      await device.close();
    }
  });

  it('maps negotiated offloads to TUN_F_* flags', () => {
    expect(tunOffloadFlags({ csum: false, tso4: true, tso6: true, ecn: true })).toBe(0);
    expect(tunOffloadFlags({ csum: true, tso4: false, tso6: false, ecn: true })).toBe(TUN_F_CSUM);
    expect(tunOffloadFlags({ csum: true, tso4: false, tso6: true, ecn: false })).toBe(
      TUN_F_CSUM | TUN_F_TSO6,
    );
    expect(NetFeature.GUEST_TSO4).toBe(7);
  });
});

describe('TAP backend errors', () => {
  it('reports a name the kernel refuses as NET_BACKEND', () => {
    expect(() => TapBackend.open({ name: 'x'.repeat(20) })).toThrow(
      expect.objectContaining({ code: 'NET_BACKEND' }),
    );
  });
});
