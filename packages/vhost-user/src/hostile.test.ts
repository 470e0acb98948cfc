/**
 * A front-end that breaks the protocol: every mistake gets an error reply (REPLY_ACK) or a closed
 * connection, and never an exception in the back-end's event loop. Then random message streams.
 */

import { Feature, featureBit } from '@virtkit/core';
import { drainEventfd, eventfd, ftruncate, memfdCreate, mmap } from '@virtkit/linux';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { VhostUserBackend } from './backend.js';
import { closeQuietly } from './channel.js';
import { Request, VRING_NOFD_MASK } from './constants.js';
import {
  encodeMessage,
  type MemoryRegionDescription,
  memoryTablePayload,
  u64Payload,
  vringAddressPayload,
  vringStatePayload,
} from './message.js';
import { EchoDevice } from './test-device.js';
import { echo, onCleanup, openFds, pair, reversed, str, text, until } from './test-support.js';
import { FrontendGuest, TestFrontend } from './testing/frontend.js';

async function ready() {
  const setup = pair(new EchoDevice({ queues: 2 }));
  const errors: string[] = [];
  setup.backend.events.on('protocol-error', (error) => errors.push(error.message));
  await setup.frontend.handshake();
  return { ...setup, errors };
}

/** Sends `payload` as `request` with NEED_REPLY and returns the REPLY_ACK status. */
async function acked(
  frontend: TestFrontend,
  request: number,
  payload?: Uint8Array,
  fds: number[] = [],
) {
  return frontend.ack(request, payload, fds);
}

describe('a front-end that breaks the protocol', () => {
  it('gets an error reply for a payload of the wrong size, and is hung up on without REPLY_ACK', async () => {
    const { frontend, errors } = await ready();
    expect(await acked(frontend, Request.SET_VRING_NUM, new Uint8Array(3))).toBe(1n);
    expect(errors[0]).toMatch(/SET_VRING_NUM carries 3 payload bytes, expected 8/);
    frontend.send(Request.SET_VRING_NUM, new Uint8Array(12));
    expect(await frontend.whenClosed()).toBe(true);
  });

  it('gets an error reply for queue indices out of range', async () => {
    const { frontend, errors } = await ready();
    expect(await acked(frontend, Request.SET_VRING_NUM, vringStatePayload(7, 64))).toBe(1n);
    expect(await acked(frontend, Request.SET_VRING_ENABLE, vringStatePayload(2, 1))).toBe(1n);
    const kick = eventfd();
    expect(await acked(frontend, Request.SET_VRING_KICK, u64Payload(200), [kick])).toBe(1n);
    closeQuietly(kick);
    expect(errors).toEqual([
      'queue index 7 is out of range: the device has 2 queues',
      'queue index 2 is out of range: the device has 2 queues',
      'queue index 200 is out of range: the device has 2 queues',
    ]);
    // GET_VRING_BASE has no way to say "failed": the back-end hangs up.
    frontend.send(Request.GET_VRING_BASE, vringStatePayload(9, 0));
    expect(await frontend.whenClosed()).toBe(true);
  });

  it('gets an error reply for bad ring sizes, addresses and descriptors', async () => {
    const { frontend, errors } = await ready();
    expect(await acked(frontend, Request.SET_VRING_NUM, vringStatePayload(0, 0))).toBe(1n);
    expect(await acked(frontend, Request.SET_VRING_NUM, vringStatePayload(0, 512))).toBe(1n);
    const outside = {
      index: 0,
      flags: 0,
      desc: 0x10n,
      used: 0x20n,
      avail: 0x30n,
      log: 0n,
    };
    expect(await acked(frontend, Request.SET_VRING_ADDR, vringAddressPayload(outside))).toBe(1n);
    const logged = { ...outside, flags: 1 };
    expect(await acked(frontend, Request.SET_VRING_ADDR, vringAddressPayload(logged))).toBe(1n);
    const [a, b] = [eventfd(), eventfd()];
    expect(await acked(frontend, Request.SET_VRING_KICK, u64Payload(0), [a, b])).toBe(1n);
    expect(await acked(frontend, Request.SET_VRING_CALL, u64Payload(VRING_NOFD_MASK), [a])).toBe(
      1n,
    );
    expect(await acked(frontend, Request.SET_VRING_CALL, u64Payload(1n << 20n), [a])).toBe(1n);
    closeQuietly(a);
    closeQuietly(b);
    expect(errors).toHaveLength(7);
    expect(errors[2]).toMatch(/descriptor ring address 0x10 is not in any memory region/);
  });

  it('cannot reconfigure a running ring', async () => {
    const { frontend } = await ready();
    const queue = await frontend.startQueue(0);
    expect(await echo(queue, 'run')).toBe('nur');
    expect(await acked(frontend, Request.SET_VRING_NUM, vringStatePayload(0, 32))).toBe(1n);
    expect(await acked(frontend, Request.SET_VRING_BASE, vringStatePayload(0, 5))).toBe(1n);
    expect(await echo(queue, 'still')).toBe('llits');
  });

  it('gets an error reply for memory tables that cannot be mapped', async () => {
    const { frontend, errors } = await ready();
    const guest = frontend.guest;
    const region = guest.regions[0]!;
    const table = (regions: MemoryRegionDescription[], fds: number[]) =>
      acked(frontend, Request.SET_MEM_TABLE, memoryTablePayload(regions), fds);
    // Overlapping guest-physical ranges.
    expect(
      await table(
        [region, { ...region, userAddress: region.userAddress + region.size }],
        [guest.fd, guest.fd],
      ),
    ).toBe(1n);
    // Fewer descriptors than regions.
    expect(await table([region, { ...region, guestAddress: 1n << 40n }], [guest.fd])).toBe(1n);
    // A descriptor that is not a file.
    const elsewhere = { ...region, guestAddress: region.guestAddress + (1n << 30n) };
    const notFile = eventfd();
    expect(await table([elsewhere], [notFile])).toBe(1n);
    closeQuietly(notFile);
    // A file shorter than the region (touching it would raise SIGBUS).
    const short = memfdCreate('short');
    ftruncate(short, 4096);
    expect(await table([elsewhere], [short])).toBe(1n);
    closeQuietly(short);
    // Misaligned, empty, beyond 2^53.
    expect(await table([{ ...region, guestAddress: region.guestAddress + 4n }], [guest.fd])).toBe(
      1n,
    );
    expect(await table([{ ...region, size: 0n }], [guest.fd])).toBe(1n);
    expect(await table([{ ...region, guestAddress: 1n << 60n }], [guest.fd])).toBe(1n);
    // No region, too many regions.
    expect(await acked(frontend, Request.SET_MEM_TABLE, new Uint8Array(8))).toBe(1n);
    const nine = new Uint8Array(8);
    new DataView(nine.buffer).setUint32(0, 9, true);
    expect(await acked(frontend, Request.SET_MEM_TABLE, nine)).toBe(1n);
    expect(errors).toHaveLength(9);
    expect(errors).toContain('memory region 0 needs 4194304 bytes of its file, which has 4096');
    // The table in force is still the good one.
    const queue = await frontend.startQueue(0);
    expect(await echo(queue, 'mapped')).toBe('deppam');
  });

  it('gets an error reply for features it was not offered', async () => {
    const { frontend } = await ready();
    expect(await acked(frontend, Request.SET_FEATURES, u64Payload(1n << 63n))).toBe(1n);
    expect(await acked(frontend, Request.SET_PROTOCOL_FEATURES, u64Payload(1n << 40n))).toBe(1n);
  });

  it('does not start a split ring whose size is not a power of two, and signals its error eventfd', async () => {
    const { backend, frontend, errors } = await ready();
    const err = eventfd();
    onCleanup(() => closeQuietly(err));
    frontend.send(Request.SET_VRING_ERR, u64Payload(1), [err]);
    const good = await frontend.startQueue(0, { size: 64 });
    await frontend.startQueue(1, { size: 64, num: 48 });
    expect(await echo(good, 'good')).toBe('doog');
    expect(backend.activeQueues).toEqual([0]);
    expect(errors).toEqual(['queue 1: split ring size 48 is not a power of two']);
    expect(drainEventfd(err)).toBe(1);
  });

  it('is hung up on for a bad protocol version or an oversized message', async () => {
    for (const bytes of [
      (() => {
        const message = encodeMessage(Request.GET_FEATURES, 0);
        message[4] = 2; // version 2
        return message;
      })(),
      (() => {
        const message = encodeMessage(Request.SET_OWNER, 0);
        new DataView(message.buffer).setUint32(8, 1 << 20, true);
        return message;
      })(),
    ]) {
      const { frontend, backend } = pair(new EchoDevice());
      const closed = new Promise<Error | undefined>((resolve) =>
        backend.events.once('disconnect', resolve),
      );
      frontend.channel.send(bytes);
      expect((await closed)?.message).toMatch(/protocol version 2|1048576-byte payload/);
    }
  });

  it('is ignored for unknown requests (and answered "failed" when it asks)', async () => {
    const { frontend } = await ready();
    frontend.send(99, new Uint8Array(4));
    expect(await acked(frontend, 98)).toBe(1n);
    expect(await acked(frontend, Request.SET_LOG_FD, undefined, [])).toBe(1n);
    const reply = await frontend.request(Request.GET_MAX_MEM_SLOTS);
    expect(new DataView(reply.payload.buffer, reply.payload.byteOffset).getBigUint64(0, true)).toBe(
      1n,
    );
    expect(await frontend.getQueueNum()).toBe(2);
  });
});

describe('random message streams', () => {
  const requests = Object.values(Request);
  const message = fc.record({
    request: fc.oneof(fc.constantFrom(...requests), fc.integer({ min: 0, max: 64 })),
    needReply: fc.boolean(),
    payload: fc.oneof(
      fc.uint8Array({ maxLength: 48 }),
      // Plausible small numbers in the usual fields, to reach deeper than size checks.
      fc
        .tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 300 }))
        .map(([index, num]) => vringStatePayload(index, num)),
      fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((value) => u64Payload(value)),
    ),
    fds: fc.constantFrom('none', 'eventfd', 'memfd', 'two'),
  });

  it('never throw in the back-end, leak no descriptors, and leave it able to serve the next front-end', async () => {
    const device = new EchoDevice({ queues: 2 });
    const backend = new VhostUserBackend(device);
    const guest = new FrontendGuest();
    onCleanup(async () => {
      await backend.close();
      guest.release();
    });
    const memfd = memfdCreate('fuzz');
    ftruncate(memfd, 1 << 16);
    onCleanup(() => closeQuietly(memfd));
    const before = openFds();
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.array(message, { minLength: 1, maxLength: 25 }),
        async (running, messages) => {
          const frontend = TestFrontend.pair(backend, {});
          try {
            if (running) {
              // Half the streams hit a running device.
              await frontend.handshake();
              expect(await echo(await frontend.startQueue(0), 'up')).toBe('pu');
            }
            for (const m of messages) {
              if (frontend.closed) break;
              const fds =
                m.fds === 'none'
                  ? []
                  : m.fds === 'memfd'
                    ? [memfd]
                    : m.fds === 'two'
                      ? [memfd, memfd]
                      : [eventfd()];
              frontend.send(m.request, m.payload, fds, m.needReply ? 8 : 0);
              if (m.fds === 'eventfd') closeQuietly(fds[0]!);
            }
            // Whatever happened, the back-end answers or hangs up; it does not hang.
            await frontend.getQueueNum().catch(() => undefined);
          } finally {
            frontend.release();
            frontend.guest.release();
            await backend.whenDisconnected();
          }
          expect(openFds()).toBe(before);
        },
      ),
      { numRuns: Number(process.env.VIRTKIT_FUZZ_RUNS ?? 60) },
    );
    expect(openFds()).toBe(before);
    // A well-behaved front-end is served afterwards.
    const frontend = TestFrontend.pair(backend, {});
    onCleanup(() => {
      frontend.release();
      frontend.guest.release();
    });
    await frontend.handshake();
    const queue = await frontend.startQueue(1);
    expect(await echo(queue, 'survived')).toBe('devivrus');
  }, 300_000);
});

describe('a damaged inflight area (packed ring)', () => {
  it('skips corrupt records with a counted violation, resubmits the sound one, and keeps serving', async () => {
    const guest = new FrontendGuest();
    onCleanup(() => guest.release());
    const features = ~featureBit(Feature.RING_INDIRECT_DESC);
    const first = new EchoDevice({ hold: true, dropOnReset: true });
    const backendA = new VhostUserBackend(first);
    const frontendA = TestFrontend.pair(backendA, guest);
    await frontendA.handshake({ layout: 'packed', features });
    const { description, fd } = await frontendA.getInflight(1, 32);
    onCleanup(() => closeQuietly(fd));
    await frontendA.setInflight(description, fd);
    const queue = await frontendA.startQueue(0, { size: 32 });
    const sent = ['zero', 'one', 'two', 'three', 'four', 'five'];
    const tokens = sent.map((m) => queue.post([text(m)], [m.length]));
    queue.kick();
    await until(() => first.held[0]!.length === 6, 2000, 'held requests');
    frontendA.close();
    await backendA.whenDisconnected();
    await backendA.close();

    // Someone scribbles on the record: the chains in flight, oldest first, get damaged fields.
    const mapping = mmap({ fd, length: Number(description.mmapSize) });
    onCleanup(() => mapping.unmap());
    const record = new DataView(mapping.buffer);
    const entry = (e: number) => 32 + 32 * e;
    const heads = Array.from({ length: 32 }, (_, e) => e)
      .filter((e) => record.getUint8(entry(e)) === 1)
      .sort((x, y) => record.getUint32(entry(x) + 8, true) - record.getUint32(entry(y) + 8, true));
    expect(heads).toHaveLength(6);
    const last = (head: number) => record.getUint16(entry(head) + 4, true);
    record.setBigUint64(entry(heads[0]!) + 24, 0xdead_0000_0000n, true); // address outside RAM
    record.setUint32(entry(heads[1]!) + 20, 0xffff_ffff, true); // huge length
    record.setUint16(entry(last(heads[2]!)) + 16, 999, true); // buffer id out of range
    record.setUint16(entry(heads[3]!) + 6, 0xffff, true); // descriptor count beyond the ring
    // Readable and writable swapped: a readable descriptor after a writable one.
    const flagsAt = (e: number) => entry(e) + 18;
    record.setUint16(flagsAt(heads[4]!), record.getUint16(flagsAt(heads[4]!), true) | 2, true);
    record.setUint16(
      flagsAt(last(heads[4]!)),
      record.getUint16(flagsAt(last(heads[4]!)), true) & ~2,
      true,
    );
    const secondDevice = new EchoDevice();
    const backendB = new VhostUserBackend(secondDevice);
    const violations: { code: string; needsReset: boolean }[] = [];
    const errors: string[] = [];
    backendB.events.on('violation', (v) => violations.push(v));
    backendB.events.on('protocol-error', (error) => errors.push(error.message));
    const frontendB = TestFrontend.pair(backendB, guest);
    onCleanup(async () => {
      frontendB.release();
      await backendB.close();
    });
    await frontendB.handshake({ layout: 'packed', features });
    expect(await frontendB.setInflight(description, fd)).toBe(0n);
    await frontendB.startQueue(0, { reuse: queue, base: 0x8000_8000 });
    expect(str((await queue.wait(tokens[5]!)).written)).toBe('evif');
    expect(violations.map((v) => v.code).sort()).toEqual(
      [
        'BUFFER_ID_OUT_OF_RANGE',
        'DESCRIPTOR_OUT_OF_MEMORY',
        'DESCRIPTOR_OUT_OF_MEMORY',
        'INFLIGHT_RECORD_CORRUPT',
        'READABLE_AFTER_WRITABLE',
      ].sort(),
    );
    expect(violations.every((v) => !v.needsReset)).toBe(true);
    expect(errors).toEqual([]);
    expect(secondDevice.handled).toBe(1);
    // The damaged requests never come back; the ring goes on without their slots.
    for (let i = 0; i < 40; i++) expect(await echo(queue, `on ${i}`)).toBe(reversed(`on ${i}`));
    for (const token of tokens.slice(0, 5)) expect(queue.completed(token)).toBe(false);
    expect(backendB.connected).toBe(true);
  });
});
