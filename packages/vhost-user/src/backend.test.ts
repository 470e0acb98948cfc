import { Feature, featureBit, type RingLayout } from '@virtkit/core';
import { BlockDevice, MemoryBackend } from '@virtkit/device-blk';
import {
  drainEventfd,
  eventfd,
  recvmsg,
  socketpair as unixSocketpair,
  waitReadable,
} from '@virtkit/linux';
import { describe, expect, it } from 'vitest';
import { VhostUserBackend } from './backend.js';
import { closeQuietly } from './channel.js';
import {
  BackendRequest,
  HEADER_SIZE,
  ProtocolFeature,
  Request,
  VHOST_USER_F_PROTOCOL_FEATURES,
} from './constants.js';
import { configPayload, u64Payload, vringStatePayload } from './message.js';
import { EchoDevice } from './test-device.js';
import {
  echo,
  onCleanup,
  openFds,
  pair,
  reversed,
  str,
  sync,
  text,
  ticks,
  until,
} from './test-support.js';
import { FrontendGuest, TestFrontend } from './testing/frontend.js';

const layouts: RingLayout[] = ['split', 'packed'];
const EVENT_IDX = featureBit(Feature.RING_EVENT_IDX);
const INDIRECT = featureBit(Feature.RING_INDIRECT_DESC);

/** The front-end's one memory region described as two halves: a new table for the same RAM. */
function inTwoHalves(frontend: TestFrontend) {
  const [region] = frontend.guest.regions;
  const half = region!.size / 2n;
  return [
    { ...region!, size: half },
    {
      guestAddress: region!.guestAddress + half,
      size: half,
      userAddress: region!.userAddress + half,
      mmapOffset: half,
    },
  ];
}

describe('requests through a vhost-user back-end', () => {
  for (const layout of layouts) {
    for (const eventIdx of [false, true]) {
      for (const indirect of [false, true]) {
        it(`serves a ${layout} ring (event idx ${eventIdx}, indirect ${indirect}) over two memory regions`, async () => {
          const { device, backend, frontend } = pair(new EchoDevice(), { regions: 2 });
          const features =
            ~(EVENT_IDX | INDIRECT) | (eventIdx ? EVENT_IDX : 0n) | (indirect ? INDIRECT : 0n);
          await frontend.handshake({ layout, features });
          const queue = await frontend.startQueue(0, { size: 64 });
          expect(await echo(queue, 'hello vhost-user')).toBe(reversed('hello vhost-user'));
          expect(backend.activeQueues).toEqual([0]);
          expect(device.activations).toBe(1);
          const negotiated = device.lastFeatures;
          expect((negotiated & featureBit(Feature.RING_PACKED)) !== 0n).toBe(layout === 'packed');
          expect((negotiated & EVENT_IDX) !== 0n).toBe(eventIdx);
          expect(negotiated & featureBit(VHOST_USER_F_PROTOCOL_FEATURES)).toBe(0n);
          // Batches of requests, several laps of the ring, segments spread over both regions.
          for (let lap = 0; lap < 3; lap++) {
            const sent = Array.from(
              { length: 12 },
              (_, i) => `req-${lap}-${`${i}`.padStart(3, '0')}`,
            );
            const tokens = sent.map((message) =>
              queue.post([text(message.slice(0, 6)), text(message.slice(6))], [4, 4, 4]),
            );
            queue.kick();
            for (const [i, token] of tokens.entries()) {
              expect(str((await queue.wait(token)).written)).toBe(reversed(sent[i]!));
            }
          }
          expect(device.handled).toBe(37);
        });
      }
    }
  }

  for (const layout of layouts) {
    it(`runs device-blk (in-memory disk) on a ${layout} ring`, async () => {
      const disk = new MemoryBackend({ size: 1 << 20 });
      const device = new BlockDevice({ backend: disk, serial: 'vhost-disk' });
      const { frontend } = pair(device);
      await frontend.handshake({ layout });
      const queue = await frontend.startQueue(0, { size: 128 });
      const header = (type: number, sector: number) => {
        const bytes = new Uint8Array(16);
        const view = new DataView(bytes.buffer);
        view.setUint32(0, type, true);
        view.setBigUint64(8, BigInt(sector), true);
        return bytes;
      };
      const payload = new Uint8Array(4096).map((_, i) => (i * 7 + 3) & 0xff);
      const write = await queue.send([header(1, 8), payload], [1]);
      expect(write.written).toEqual(new Uint8Array([0]));
      expect(disk.data.subarray(4096, 8192)).toEqual(payload);
      const read = await queue.send([header(0, 8)], [4096, 1]);
      expect(read.len).toBe(4097);
      expect(read.written.subarray(0, 4096)).toEqual(payload);
      expect(read.written[4096]).toBe(0);
      const id = await queue.send([header(8, 0)], [20, 1]);
      expect(str(id.written.subarray(0, 10))).toBe('vhost-disk');
      const config = await frontend.getConfig(0, 8);
      expect(new DataView(config.buffer).getBigUint64(0, true)).toBe(2048n); // capacity in sectors
    });
  }

  it('runs every queue of a multi-queue device', async () => {
    const { backend, frontend } = pair(new EchoDevice({ queues: 3 }));
    await frontend.handshake();
    expect(await frontend.getQueueNum()).toBe(3);
    const queues = [
      await frontend.startQueue(0),
      await frontend.startQueue(1),
      await frontend.startQueue(2),
    ];
    for (const [i, queue] of queues.entries()) {
      expect(await echo(queue, `queue ${i}`)).toBe(reversed(`queue ${i}`));
    }
    expect(backend.activeQueues).toEqual([0, 1, 2]);
  });

  it('starts on a kick when not every queue is set up, and adds a queue started later', async () => {
    const { device, backend, frontend } = pair(new EchoDevice({ queues: 2 }));
    await frontend.handshake();
    const first = await frontend.startQueue(0);
    expect(await echo(first, 'one')).toBe('eno');
    expect(backend.activeQueues).toEqual([0]);
    const second = await frontend.startQueue(1);
    expect(await echo(second, 'two')).toBe('owt');
    expect(await echo(first, 'again')).toBe('niaga');
    expect(backend.activeQueues).toEqual([0, 1]);
    expect(device.activations).toBe(2);
  });
});

describe('stopping rings (GET_VRING_BASE)', () => {
  for (const layout of layouts) {
    it(`lets requests in flight complete before reporting the ${layout} ring's base`, async () => {
      const { device, backend, frontend } = pair(new EchoDevice({ hold: true }));
      await frontend.handshake({ layout });
      const queue = await frontend.startQueue(0, { size: 16 });
      const tokens = ['a1', 'b22', 'c333'].map((m) => queue.post([text(m)], [m.length]));
      queue.kick();
      await until(() => device.held[0]!.length === 3, 2000, 'three held requests');
      const base = await frontend.getVringBase(0);
      // All three completed by the device's reset, then the ring stopped after them.
      expect(backend.activeQueues).toEqual([]);
      for (const token of tokens) expect(queue.completed(token)).toBe(true);
      expect(base).toBe(layout === 'split' ? 3 : (3 | 0x8000 | ((3 | 0x8000) << 16)) >>> 0);
      // The ring is stopped: a kick is not served.
      const late = queue.post([text('late')], [4]);
      queue.kick(true);
      await ticks(5);
      expect(queue.completed(late)).toBe(false);
      // Restarted at the base it reported, the ring continues, late request included.
      device.hold = false;
      await frontend.startQueue(0, { reuse: queue, base });
      expect(str((await queue.wait(late)).written)).toBe('etal');
      expect(await echo(queue, 'next')).toBe('txen');
    });

    it(`gives back a ${layout} ring's requests the device dropped unstarted`, async () => {
      const { device, frontend } = pair(new EchoDevice({ hold: true, dropOnReset: true }));
      await frontend.handshake({ layout });
      const queue = await frontend.startQueue(0, { size: 8 });
      expect(
        await (async () => {
          device.hold = false;
          const answer = await echo(queue, 'warm-up');
          device.hold = true;
          return answer;
        })(),
      ).toBe('pu-mraw');
      const tokens = ['x', 'yy', 'zzz'].map((m) => queue.post([text(m)], [m.length]));
      queue.kick();
      await until(() => device.held[0]!.length === 3, 2000, 'three held requests');
      const base = await frontend.getVringBase(0);
      // One request was used; the three dropped ones are offered again.
      expect(base).toBe(layout === 'split' ? 1 : (1 | 0x8000 | ((1 | 0x8000) << 16)) >>> 0);
      for (const token of tokens) expect(queue.completed(token)).toBe(false);
      device.hold = false;
      await frontend.startQueue(0, { reuse: queue, base });
      const answers = await Promise.all(tokens.map((token) => queue.wait(token)));
      expect(answers.map((a) => str(a.written))).toEqual(['x', 'yy', 'zzz']);
      expect(device.handled).toBe(4);
    });
  }
});

describe('after the front-end stopped the device', () => {
  it('does not restart it on a pending kick, only when the front-end starts a ring again', async () => {
    const { backend, frontend } = pair(new EchoDevice({ queues: 2 }));
    await frontend.handshake();
    const first = await frontend.startQueue(0);
    const second = await frontend.startQueue(1);
    expect(await echo(second, 'up')).toBe('pu');
    const base0 = await frontend.getVringBase(0);
    expect(backend.activeQueues).toEqual([]);
    // The guest kicks the other ring while the front-end is stopping the device.
    const token = second.post([text('late')], [4]);
    second.kick(true);
    await ticks(5);
    await sync(frontend);
    expect(backend.activeQueues).toEqual([]);
    expect(second.completed(token)).toBe(false);
    const base1 = await frontend.getVringBase(1);
    expect([base0, base1]).toEqual([0, 1]);
    // Started again: the waiting request is served.
    await frontend.startQueue(0, { reuse: first, base: base0 });
    await frontend.startQueue(1, { reuse: second, base: base1 });
    expect(str((await second.wait(token)).written)).toBe('etal');
    expect(await echo(first, 'first')).toBe('tsrif');
    expect(backend.activeQueues).toEqual([0, 1]);
  });
});

describe('reconnecting', () => {
  it('resubmits, exactly once, requests a back-end held when its front-end went away (inflight area)', async () => {
    const guest = new FrontendGuest();
    onCleanup(() => guest.release());
    // First back-end: its device takes requests and never answers them (a crash mid-I/O).
    const first = new EchoDevice({ hold: true, dropOnReset: true });
    const backendA = new VhostUserBackend(first);
    const frontendA = TestFrontend.pair(backendA, guest);
    await frontendA.handshake();
    const { description, fd: inflightFd } = await frontendA.getInflight(1, 64);
    onCleanup(() => closeQuietly(inflightFd));
    expect(await frontendA.setInflight(description, inflightFd)).toBe(0n);
    const queue = await frontendA.startQueue(0, { size: 64 });
    first.hold = false;
    expect(await echo(queue, 'before')).toBe('erofeb');
    first.hold = true;
    const sent = ['one', 'two', 'three', 'four'];
    const tokens = sent.map((m) => queue.post([text(m)], [m.length]));
    queue.kick();
    await until(() => first.held[0]!.length === 4, 2000, 'held requests');
    // Answer one of them out of order, so the record has a hole.
    const [, second] = first.held[0]!.splice(1, 1);
    void second;
    frontendA.close();
    await backendA.whenDisconnected();
    await backendA.close();
    for (const token of tokens) expect(queue.completed(token)).toBe(false);

    // Second back-end, new device: the front-end hands over the inflight area, and restarts the
    // ring at the used index (what QEMU does when GET_VRING_BASE could not be asked).
    const secondDevice = new EchoDevice();
    const logs: string[] = [];
    const backendB = new VhostUserBackend(secondDevice, { log: (line) => logs.push(line) });
    const frontendB = TestFrontend.pair(backendB, guest);
    onCleanup(async () => {
      frontendB.release();
      await backendB.close();
    });
    await frontendB.handshake();
    expect(await frontendB.setInflight(description, inflightFd)).toBe(0n);
    await frontendB.startQueue(0, { reuse: queue, base: queue.usedIndex() });
    const answers = await Promise.all(tokens.map((token) => queue.wait(token)));
    expect(answers.map((a) => str(a.written))).toEqual(sent.map(reversed));
    expect(logs).toContain('queue 0: resubmitting 4 requests left in flight');
    expect(secondDevice.handled).toBe(4);
    // Then the ring itself, past the resubmitted requests.
    expect(await echo(queue, 'after')).toBe('retfa');
    expect(queue.collect()).toEqual([]);
  });

  for (const indirect of [false, true]) {
    it(`resubmits, exactly once, a packed ring's requests a back-end held when it died, after out-of-order completions (indirect ${indirect})`, async () => {
      const guest = new FrontendGuest();
      onCleanup(() => guest.release());
      const features = indirect ? ~0n : ~INDIRECT;
      const first = new EchoDevice({ hold: true, dropOnReset: true });
      const backendA = new VhostUserBackend(first);
      const frontendA = TestFrontend.pair(backendA, guest);
      await frontendA.handshake({ layout: 'packed', features });
      const { description, fd: inflightFd } = await frontendA.getInflight(1, 16);
      onCleanup(() => closeQuietly(inflightFd));
      expect(await frontendA.setInflight(description, inflightFd)).toBe(0n);
      const queue = await frontendA.startQueue(0, { size: 16 });
      first.hold = false;
      for (const word of ['warm', 'up', 'the', 'ring'])
        expect(await echo(queue, word)).toBe(reversed(word));
      first.hold = true;
      const sent = ['one', 'two', 'three', 'four', 'five'];
      const tokens = sent.map((m) => queue.post([text(m)], [m.length]));
      queue.kick();
      await until(() => first.held[0]!.length === 5, 2000, 'held requests');
      // The device finishes the second and fourth (their used descriptors land on the slots of
      // the first ones), then the back-end dies with the others in flight.
      const held = first.held[0]!.splice(0);
      first.held[0]!.push(held[3]!, held[1]!);
      expect(first.completeHeld(0)).toBe(2);
      first.held[0]!.push(held[0]!, held[2]!, held[4]!);
      expect(queue.collect().sort()).toEqual([tokens[1], tokens[3]].sort());
      frontendA.close();
      await backendA.whenDisconnected();
      await backendA.close();
      expect(first.handled).toBe(6);

      // A new back-end and device. QEMU sends the base it last knew (the start of the ring): it
      // cannot tell where a packed ring was when a back-end crashed.
      const secondDevice = new EchoDevice();
      const logs: string[] = [];
      const violations: string[] = [];
      const backendB = new VhostUserBackend(secondDevice, { log: (line) => logs.push(line) });
      backendB.events.on('violation', (v) => violations.push(v.code));
      const frontendB = TestFrontend.pair(backendB, guest);
      onCleanup(async () => {
        frontendB.release();
        await backendB.close();
      });
      await frontendB.handshake({ layout: 'packed', features });
      expect(await frontendB.setInflight(description, inflightFd)).toBe(0n);
      await frontendB.startQueue(0, { reuse: queue, base: 0x8000_8000 });
      const redone = [0, 2, 4];
      const answers = await Promise.all(redone.map((i) => queue.wait(tokens[i]!)));
      expect(answers.map((a) => str(a.written))).toEqual(redone.map((i) => reversed(sent[i]!)));
      expect(logs).toContain('queue 0: resubmitting 3 requests left in flight');
      expect(secondDevice.handled).toBe(3);
      expect(violations).toEqual([]);
      // The ring goes on past them, lap after lap, and nothing comes back twice.
      for (let i = 0; i < 20; i++)
        expect(await echo(queue, `after ${i}`)).toBe(reversed(`after ${i}`));
      expect(secondDevice.handled).toBe(23);
      expect(queue.collect()).toEqual([]);
    });
  }

  it('serves the next front-end on the same socket after one leaves', async () => {
    const device = new EchoDevice();
    const backend = new VhostUserBackend(device);
    const path = `/tmp/virtkit-vhost-test-${process.pid}.sock`;
    backend.listen(path);
    onCleanup(() => backend.close());
    const guest = new FrontendGuest();
    onCleanup(() => guest.release());
    let disconnects = 0;
    backend.events.on('disconnect', () => disconnects++);
    for (let round = 0; round < 2; round++) {
      await until(() => !backend.connected, 2000, 'no front-end');
      const frontend = TestFrontend.connect(path, guest);
      await frontend.handshake();
      const queue = await frontend.startQueue(0);
      expect(await echo(queue, `round ${round}`)).toBe(reversed(`round ${round}`));
      // A second front-end while one is connected is turned away.
      const intruder = TestFrontend.connect(path, guest);
      expect(await intruder.whenClosed()).toBe(true);
      frontend.release();
      await backend.whenDisconnected();
      expect(disconnects).toBe(round + 1);
    }
    expect(device.resets).toBeGreaterThanOrEqual(2);
  });

  it('leaves no descriptors or mappings behind', async () => {
    const before = openFds();
    {
      const backend = new VhostUserBackend(new EchoDevice({ queues: 2 }));
      const frontend = TestFrontend.pair(backend);
      await frontend.handshake();
      const { description, fd } = await frontend.getInflight(2, 64);
      await frontend.setInflight(description, fd);
      closeQuietly(fd);
      const err = eventfd();
      frontend.send(Request.SET_VRING_ERR, u64Payload(0), [err]);
      closeQuietly(err);
      const queues = [await frontend.startQueue(0), await frontend.startQueue(1)];
      for (const queue of queues) expect(await echo(queue, 'fd')).toBe('df');
      frontend.release();
      await backend.whenDisconnected();
      await backend.close();
      frontend.guest.release();
    }
    await ticks();
    expect(openFds()).toBe(before);
  });
});

describe('device state messages', () => {
  it('SET_STATUS starts and stops the device; GET_STATUS reads it back', async () => {
    const { device, backend, frontend } = pair(new EchoDevice({ queues: 2 }));
    await frontend.handshake();
    expect(frontend.protocolFeatures & (1n << BigInt(ProtocolFeature.STATUS))).not.toBe(0n);
    await frontend.startQueue(0);
    await sync(frontend);
    expect(backend.activeQueues).toEqual([0]);
    frontend.send(Request.SET_STATUS, u64Payload(0));
    await sync(frontend);
    expect(backend.activeQueues).toEqual([]);
    expect(device.resets).toBe(1);
    frontend.send(Request.SET_STATUS, u64Payload(0xf));
    await sync(frontend);
    expect(backend.activeQueues).toEqual([0]);
    const status = await frontend.request(Request.GET_STATUS);
    expect(new DataView(status.payload.buffer, status.payload.byteOffset).getUint8(0)).toBe(0xf);
    // DRIVER_OK does not run a ring the front-end has not enabled (it moves no data).
    await frontend.startQueue(1, { enable: false });
    frontend.send(Request.SET_STATUS, u64Payload(0xf));
    await sync(frontend);
    expect(backend.activeQueues).toEqual([0]);
    expect(await frontend.ack(Request.SET_VRING_ENABLE, vringStatePayload(1, 1))).toBe(0n);
    await sync(frontend);
    expect(backend.activeQueues).toEqual([0, 1]);
  });

  it('stopping a ring the device does not run on leaves the device running on the others', async () => {
    const { backend, frontend } = pair(new EchoDevice({ queues: 2 }), { size: 2 << 20 });
    await frontend.handshake();
    const first = await frontend.startQueue(0);
    await frontend.startQueue(1, { enable: false });
    expect(await echo(first, 'one')).toBe('eno');
    expect(backend.activeQueues).toEqual([0]);
    await frontend.request(Request.GET_VRING_BASE, vringStatePayload(1, 0));
    expect(backend.activeQueues).toEqual([0]);
    // A later stop-and-restart (the same memory as two regions) brings it back on ring 0.
    await frontend.setMemTable(inTwoHalves(frontend));
    expect(await echo(first, 'two')).toBe('owt');
    expect(backend.activeQueues).toEqual([0]);
  });

  it('moves no data on a disabled ring; enabling it again resumes where it stopped', async () => {
    const { backend, frontend } = pair(new EchoDevice({ queues: 2 }));
    await frontend.handshake();
    const first = await frontend.startQueue(0);
    const second = await frontend.startQueue(1);
    expect(await echo(first, 'one')).toBe('eno');
    expect(await echo(second, 'two')).toBe('owt');
    expect(await frontend.ack(Request.SET_VRING_ENABLE, vringStatePayload(0, 0))).toBe(0n);
    await sync(frontend);
    expect(backend.activeQueues).toEqual([1]);
    const token = first.post([new TextEncoder().encode('held')], [4]);
    first.kick();
    expect(await echo(second, 'still')).toBe('llits');
    await sync(frontend);
    expect(first.completed(token)).toBe(false);
    expect(await frontend.ack(Request.SET_VRING_ENABLE, vringStatePayload(0, 1))).toBe(0n);
    const held = await first.wait(token);
    expect(new TextDecoder().decode(held.written)).toBe('dleh');
    expect(await echo(first, 'again')).toBe('niaga');
  });

  it('RESET_DEVICE stops the device and forgets the rings', async () => {
    const { device, backend, frontend } = pair(new EchoDevice());
    await frontend.handshake();
    const queue = await frontend.startQueue(0);
    expect(await echo(queue, 'abc')).toBe('cba');
    expect(await frontend.ack(Request.RESET_DEVICE)).toBe(0n);
    expect(backend.activeQueues).toEqual([]);
    expect(backend.negotiatedFeatures).toBeUndefined();
    expect(device.resets).toBe(1);
    // Set up again from scratch.
    await frontend.setFeatures(frontend.features);
    const again = await frontend.startQueue(0);
    expect(await echo(again, 'xyz')).toBe('zyx');
  });

  it('keeps serving through a new memory table', async () => {
    const { device, frontend } = pair(new EchoDevice(), { size: 2 << 20 });
    await frontend.handshake();
    const queue = await frontend.startQueue(0);
    expect(await echo(queue, 'first table')).toBe(reversed('first table'));
    // The same memory described as two regions: the device is restarted on the new table.
    await frontend.setMemTable(inTwoHalves(frontend));
    expect(await echo(queue, 'second table')).toBe(reversed('second table'));
    expect(device.activations).toBe(2);
    // The same table again changes nothing.
    await frontend.setMemTable(frontend.guest.regions);
    await frontend.setMemTable(frontend.guest.regions);
    expect(await echo(queue, 'third')).toBe('driht');
    expect(device.activations).toBe(3);
  });

  it('reads and writes the configuration space', async () => {
    const { device, frontend } = pair(new EchoDevice());
    await frontend.handshake();
    const config = await frontend.getConfig(0, 8);
    const view = new DataView(config.buffer);
    expect(view.getUint32(0, true)).toBe(0x12345678);
    expect(view.getUint32(4, true)).toBe(1);
    // Past the end of the space reads as zeros (front-ends ask for their own struct size).
    expect(await frontend.getConfig(12, 8)).toEqual(new Uint8Array(8));
    expect(await frontend.getConfig(16, 4)).toEqual(new Uint8Array(0));
    const value = new Uint8Array([1, 2, 3, 4]);
    expect(await frontend.ack(Request.SET_CONFIG, configPayload(8, 0, value))).toBe(0n);
    expect(device.config.getU32(8)).toBe(0x04030201);
    expect(await frontend.ack(Request.SET_CONFIG, configPayload(0, 0, value))).toBe(1n);
    // Flags 1 (a migration restore in vhost-user.rst) is how Cloud Hypervisor sends driver
    // writes; we never migrate, so it is a driver write too. Anything else is refused.
    const other = new Uint8Array([5, 6, 7, 8]);
    expect(await frontend.ack(Request.SET_CONFIG, configPayload(8, 1, other))).toBe(0n);
    expect(device.config.getU32(8)).toBe(0x08070605);
    expect(await frontend.ack(Request.SET_CONFIG, configPayload(8, 2, value))).toBe(1n);
    expect(device.config.getU32(8)).toBe(0x08070605);
  });

  it('tells the front-end about configuration changes on the back-end channel', async () => {
    const { device, frontend } = pair(new EchoDevice());
    await frontend.handshake();
    const [ours, theirs] = unixSocketpair({ nonBlocking: true });
    onCleanup(() => closeQuietly(ours));
    expect(await frontend.ack(Request.SET_BACKEND_REQ_FD, undefined, [theirs])).toBe(0n);
    closeQuietly(theirs);
    device.config.setU32(12, 7);
    await waitReadable(ours);
    const header = new Uint8Array(HEADER_SIZE);
    expect(recvmsg(ours, header)?.bytes).toBe(HEADER_SIZE);
    const view = new DataView(header.buffer);
    expect(view.getUint32(0, true)).toBe(BackendRequest.CONFIG_CHANGE_MSG);
    expect(view.getUint32(8, true)).toBe(0);
  });

  it("signals the ring's error eventfd when the guest breaks the ring", async () => {
    const { backend, frontend } = pair(new EchoDevice());
    const violations: string[] = [];
    backend.events.on('violation', (v) => violations.push(v.code));
    await frontend.handshake({ features: ~EVENT_IDX });
    const err = eventfd();
    onCleanup(() => closeQuietly(err));
    const queue = await frontend.startQueue(0, { size: 8 });
    frontend.send(Request.SET_VRING_ERR, u64Payload(0), [err]);
    expect(await echo(queue, 'ok')).toBe('ko');
    // A head beyond the ring in the available ring.
    const memory = frontend.guest.memory;
    const avail = queue.driver.driverAddr;
    const index = memory.readU16(avail + 2);
    memory.writeU16(avail + 4 + 2 * (index % 8), 99);
    memory.writeU16(avail + 2, (index + 1) & 0xffff);
    queue.kick(true);
    await waitReadable(err);
    expect(drainEventfd(err)).toBe(1);
    expect(violations).toEqual(['HEAD_OUT_OF_RANGE']);
  });

  it('offers what it can carry: VERSION_1, the ring features, protocol features', async () => {
    const { frontend } = pair(new EchoDevice());
    const features = await frontend.getFeatures();
    expect(features & featureBit(Feature.VERSION_1)).not.toBe(0n);
    expect(features & featureBit(VHOST_USER_F_PROTOCOL_FEATURES)).not.toBe(0n);
    expect(features & featureBit(Feature.RING_PACKED)).not.toBe(0n);
    const protocol = await frontend.getProtocolFeatures();
    for (const bit of [
      ProtocolFeature.MQ,
      ProtocolFeature.REPLY_ACK,
      ProtocolFeature.CONFIG,
      ProtocolFeature.RESET_DEVICE,
      ProtocolFeature.INFLIGHT_SHMFD,
    ]) {
      expect(protocol & (1n << BigInt(bit))).not.toBe(0n);
    }
    expect(await frontend.getQueueNum()).toBe(1);
    const base = await frontend.request(Request.GET_VRING_BASE, vringStatePayload(0, 0));
    expect(base.payload.length).toBe(8);
  });
});
