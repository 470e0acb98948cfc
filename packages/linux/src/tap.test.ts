import { execFileSync } from 'node:child_process';
import koffi from 'koffi';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  IFF_MULTI_QUEUE,
  IFF_NO_PI,
  IFF_TAP,
  IFF_VNET_HDR,
  O_CLOEXEC,
  O_RDONLY,
  TUN_F_CSUM,
  TUN_F_TSO_ECN,
  TUN_F_TSO4,
  TUN_F_TSO6,
  TUN_F_UFO,
} from './constants.js';
import { close, open, read, readv, write, writev } from './files.js';
import {
  getTapInterface,
  getVnetHeaderSize,
  openTap,
  setTapOffload,
  setTapQueueEnabled,
  setVnetHeaderSize,
  tunFeatures,
} from './tap.js';
import { waitReadable } from './watch.js';

// The TAP device lives in a network namespace of its own so the test never touches the host's
// interfaces. This thread enters the namespace with setns(2) to create the device and an
// AF_PACKET socket on it, then returns; the descriptors keep working from outside.
const namespace = `virtkit-test-${process.pid}`;
const TAP_NAME = 'vktap0';
const ETHERTYPE = 0x88b5; // IEEE 802 local experimental: nothing else on the link uses it

let unavailable: string | undefined;
beforeAll(() => {
  try {
    execFileSync('ip', ['netns', 'add', namespace], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (error) {
    const reason =
      (error as NodeJS.ErrnoException).code === 'ENOENT'
        ? 'the ip command is missing'
        : (error as Error).message.split('\n')[0];
    unavailable = `cannot create a network namespace: ${reason}`;
  }
});
afterAll(() => {
  if (unavailable === undefined) execFileSync('ip', ['netns', 'delete', namespace]);
});

function inNamespace(...command: string[]): string {
  return execFileSync('ip', ['netns', 'exec', namespace, ...command], { encoding: 'utf8' }).trim();
}

const libc = koffi.load('libc.so.6');
const setns = libc.func('int setns(int fd, int nstype)');
const socket = libc.func('int socket(int domain, int type, int protocol)');
const bind = libc.func('int bind(int fd, const void *addr, uint32_t addrlen)');
const CLONE_NEWNET = 0x40000000;
const AF_PACKET = 17;
const SOCK_RAW = 3;
const SOCK_NONBLOCK = 0o4000;
const ETH_P_ALL_BE = 0x0300; // htons(ETH_P_ALL = 3)

/** Runs `body` with this thread inside the test namespace. */
function withinNamespace<T>(body: () => T): T {
  const home = open('/proc/thread-self/ns/net', O_RDONLY | O_CLOEXEC);
  const target = open(`/run/netns/${namespace}`, O_RDONLY | O_CLOEXEC);
  try {
    if (setns(target, CLONE_NEWNET) !== 0) throw new Error(`setns failed: errno ${koffi.errno()}`);
    let outcome: { value: T } | { error: unknown };
    try {
      outcome = { value: body() };
    } catch (error) {
      outcome = { error };
    }
    // Staying in the namespace would silently move every later test of this worker into it.
    if (setns(home, CLONE_NEWNET) !== 0) throw new Error('could not leave the test namespace');
    if ('error' in outcome) throw outcome.error;
    return outcome.value;
  } finally {
    close(home);
    close(target);
  }
}

function frame(marker: number): Uint8Array {
  const bytes = new Uint8Array(60);
  bytes.fill(0xff, 0, 6); // broadcast destination
  bytes.set([0x02, 0, 0, 0, 0, marker], 6); // locally administered source
  new DataView(bytes.buffer).setUint16(12, ETHERTYPE);
  bytes.fill(marker, 14);
  return bytes;
}

const isOurs = (bytes: Uint8Array, length: number, marker: number) =>
  length >= 60 &&
  bytes[12] === ETHERTYPE >> 8 &&
  bytes[13] === (ETHERTYPE & 0xff) &&
  bytes[11] === marker;

/** Reads from a non-blocking fd until `accept` matches or 2 s pass (the link carries IPv6 noise). */
async function readMatching(
  fd: number,
  readOnce: () => number | null,
  accept: (length: number) => boolean,
): Promise<number> {
  const deadline = Date.now() + 2000;
  for (;;) {
    const length = readOnce();
    if (length !== null && accept(length)) return length;
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw new Error('the expected frame did not arrive within 2 s');
    if (length === null) {
      await waitReadable(fd, { signal: AbortSignal.timeout(remaining) }).catch(() => {});
    }
  }
}

describe('TUN/TAP', () => {
  it('creates a TAP with vnet headers and offloads, and moves frames both ways', async (context) => {
    if (unavailable) context.skip(unavailable);
    const { tap, packet } = withinNamespace(() => {
      const tap = openTap({
        name: TAP_NAME,
        vnetHeaderSize: 12,
        offloads: TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN | TUN_F_UFO,
      });
      const packet = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK, ETH_P_ALL_BE) as number;
      return { tap, packet };
    });
    try {
      expect(packet).toBeGreaterThan(0);
      expect(tap.name).toBe(TAP_NAME);
      expect(tap.flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)).toBe(
        IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
      );
      expect(getTapInterface(tap.fd)).toEqual({ name: TAP_NAME, flags: tap.flags });
      expect(getVnetHeaderSize(tap.fd)).toBe(12);
      setVnetHeaderSize(tap.fd, 10);
      expect(getVnetHeaderSize(tap.fd)).toBe(10);
      setVnetHeaderSize(tap.fd, 12);
      expect(() => setTapOffload(tap.fd, 0x8000_0000)).toThrow(
        expect.objectContaining({ code: 'EINVAL', syscall: 'ioctl(TUNSETOFFLOAD)' }),
      );
      setTapOffload(tap.fd, TUN_F_CSUM | TUN_F_TSO4);

      inNamespace('ip', 'link', 'set', TAP_NAME, 'up');
      const ifindex = Number(inNamespace('cat', `/sys/class/net/${TAP_NAME}/ifindex`));
      // struct sockaddr_ll: family, protocol (big-endian), ifindex; the rest zero.
      const address = new Uint8Array(20);
      const view = new DataView(address.buffer);
      view.setUint16(0, AF_PACKET, true);
      view.setUint16(2, 0x0003);
      view.setInt32(4, ifindex, true);
      expect(bind(packet, address, 20)).toBe(0);

      // Guest → host: a frame written with a zero vnet header arrives on the interface.
      const header = new Uint8Array(12); // flags 0, GSO_NONE, num_buffers 0
      const sent = frame(0x11);
      const rxBefore = Number(
        inNamespace('cat', `/sys/class/net/${TAP_NAME}/statistics/rx_packets`),
      );
      expect(writev(tap.fd, [header, sent])).toBe(72);
      const seen = new Uint8Array(2048);
      const seenLength = await readMatching(
        packet,
        () => read(packet, seen),
        (length) => isOurs(seen, length, 0x11),
      );
      expect(seen.subarray(0, seenLength)).toEqual(sent);
      const rxAfter = Number(
        inNamespace('cat', `/sys/class/net/${TAP_NAME}/statistics/rx_packets`),
      );
      expect(rxAfter).toBeGreaterThan(rxBefore);

      // Host → guest: a frame sent on the interface is read from the TAP behind a vnet header.
      const outgoing = frame(0x22);
      expect(write(packet, outgoing)).toBe(60);
      const readHeader = new Uint8Array(12).fill(0xee);
      const body = new Uint8Array(2048);
      const total = await readMatching(
        tap.fd,
        () => readv(tap.fd, [readHeader, body]),
        (length) => isOurs(body, length - 12, 0x22),
      );
      expect(total).toBe(12 + 60);
      expect([...readHeader.subarray(0, 10)]).toEqual(new Array(10).fill(0)); // no offload used
      expect(body.subarray(0, 60)).toEqual(outgoing);
    } finally {
      close(packet);
      close(tap.fd);
    }
  });

  it('opens several queues of a multi-queue TAP', (context) => {
    if (unavailable) context.skip(unavailable);
    const queues = withinNamespace(() => {
      const first = openTap({ name: 'vkmq0', multiQueue: true, vnetHeader: false });
      try {
        return [first, openTap({ name: 'vkmq0', multiQueue: true, vnetHeader: false })];
      } catch (error) {
        close(first.fd);
        throw error;
      }
    });
    try {
      expect(queues.map((queue) => queue.name)).toEqual(['vkmq0', 'vkmq0']);
      for (const queue of queues) {
        expect(queue.flags & (IFF_MULTI_QUEUE | IFF_VNET_HDR)).toBe(IFF_MULTI_QUEUE);
      }
      expect(tunFeatures() & IFF_MULTI_QUEUE).toBe(IFF_MULTI_QUEUE);
      setTapQueueEnabled(queues[1]!.fd, false);
      // Detaching twice is refused by the kernel: proof the first call took effect.
      expect(() => setTapQueueEnabled(queues[1]!.fd, false)).toThrow(
        expect.objectContaining({ code: 'EINVAL', syscall: 'ioctl(TUNSETQUEUE)' }),
      );
      setTapQueueEnabled(queues[1]!.fd, true);
    } finally {
      for (const queue of queues) close(queue.fd);
    }
  });

  it('rejects a name too long for an interface', () => {
    expect(() => openTap({ name: 'a-very-long-name-0' })).toThrow(
      expect.objectContaining({ code: 'EINVAL', syscall: 'ioctl(TUNSETIFF)' }),
    );
  });
});
