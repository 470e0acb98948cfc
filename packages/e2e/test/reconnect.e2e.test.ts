/**
 * Backend restart: QEMU's vhost-user-blk chardev has `reconnect=1`; the guest writes and
 * verifies data, idles while the test stops the backend and starts a new one on the same socket,
 * and then reads its data back and writes more. The host checks both writes in the image.
 *
 * Runs against our backend (stopped with SIGTERM, and killed with SIGKILL as a crash, on split
 * and packed rings) and qemu-storage-daemon as the control. Then our backend is killed while the
 * guest has writes in flight: the new one resubmits them from the inflight area.
 */

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attachBlk, BLK_SERVER_NAMES } from '../src/attach.js';
import { startStorageDaemon, startVirtkitBackend, type VhostUserBackend } from '../src/backend.js';
import { createRawImage } from '../src/disk.js';
import { outputTail } from '../src/errors.js';
import { prepareX86Guest, scriptInitramfs } from '../src/guest.js';
import { startGuestVm } from '../src/qemu.js';
import {
  BUSY_LAYOUT,
  BUSY_MARKER,
  busyReconnectScript,
  checkBusyReconnectRun,
  checkReconnectRun,
  IDLE_MARKER,
  RECONNECT_LAYOUT,
  reconnectScript,
} from '../src/scenarios/reconnect.js';
import {
  guestSkipReason,
  reportSkip,
  storageDaemonSkipReason,
  virtkitSkipReason,
} from '../src/skip.js';

const STEP_TIMEOUT_MS = 60_000;
const TEST_TIMEOUT_MS = 150_000;
/** QEMU retries every second; once it has connected, let it finish setting the device up. */
const RECONNECT_TIMEOUT_MS = 15_000;
const RECONNECT_SETTLE_MS = 1_000;
/** How long the busy guest writes before the kill, and after the restart. */
const BUSY_RUN_MS = 2_000;

/** What a failing assertion shows: the guest console's tail and each backend's log tail. */
function runContext(
  vm: { readonly output: string },
  backends: readonly VhostUserBackend[],
): string {
  return `${outputTail(vm.output, 60)}\n${backends
    .map((backend, i) => `backend #${i + 1}:\n${outputTail(backend.process.output, 20)}`)
    .join('\n')}`;
}

const guestSkip = await guestSkipReason();
reportSkip('reconnect guest tests', guestSkip);
const virtkitSkip = virtkitSkipReason();
const qsdSkip = storageDaemonSkipReason();
if (guestSkip === undefined) {
  reportSkip(BLK_SERVER_NAMES.virtkit, virtkitSkip);
  reportSkip(BLK_SERVER_NAMES.qsd, qsdSkip);
}

describe.skipIf(guestSkip !== undefined)(
  'vhost-user-blk backend restart under an idle guest',
  () => {
    let kernel: string;
    let initrd: string;
    let work: string;

    beforeAll(async () => {
      kernel = (await prepareX86Guest()).kernel;
      initrd = await scriptInitramfs(reconnectScript());
      work = mkdtempSync(join(tmpdir(), 'virtkit-e2e-reconnect-'));
    }, 600_000);

    afterAll(() => {
      if (work) rmSync(work, { recursive: true, force: true });
    });

    const cases = [
      { server: 'virtkit', signal: 'SIGTERM', packed: false, skip: virtkitSkip },
      { server: 'virtkit', signal: 'SIGKILL', packed: false, skip: virtkitSkip },
      { server: 'virtkit', signal: 'SIGKILL', packed: true, skip: virtkitSkip },
      { server: 'qsd', signal: 'SIGTERM', packed: false, skip: qsdSkip },
    ] as const;

    for (const { server, signal, packed, skip } of cases) {
      it.skipIf(skip !== undefined)(
        `${BLK_SERVER_NAMES[server]} stopped with ${signal} and restarted${packed ? ' (packed ring)' : ''}: I/O continues with correct data`,
        async () => {
          const dir = mkdtempSync(join(work, `${server}-`));
          const image = join(dir, 'disk.img');
          createRawImage(image, RECONNECT_LAYOUT.size);
          const disk = await attachBlk(server, {
            image,
            socketDir: dir,
            reconnect: 1,
            ...(packed ? { packed: true } : {}),
          });
          if (disk.attachment.kind !== 'vhost-user') throw new Error('expected a vhost-user disk');
          const socket = disk.attachment.socket;
          const restart = (): Promise<VhostUserBackend> =>
            server === 'virtkit'
              ? startVirtkitBackend({ socket, device: `blk,path=${image}` })
              : startStorageDaemon({ socket, image });
          const backends: VhostUserBackend[] = [disk.backend!];
          const vm = startGuestVm({ kernel, initrd, blk: [disk.attachment] });
          const context = () => runContext(vm, backends);
          try {
            await vm.waitFor(IDLE_MARKER, { timeoutMs: STEP_TIMEOUT_MS });
            const status = await backends[0]!.stop(signal);
            const next = await restart();
            backends.push(next);
            await next.connected(RECONNECT_TIMEOUT_MS);
            await new Promise((wake) => setTimeout(wake, RECONNECT_SETTLE_MS));
            vm.write('go\n');
            const end = await vm.wait(STEP_TIMEOUT_MS);
            expect(end.timedOut, context()).toBe(false);
            expect(checkReconnectRun(vm.output, image), context()).toEqual([]);
            expect(end.code, context()).toBe(0);
            if (server === 'virtkit') {
              // The first one stopped cleanly (or was killed); the new one ends with QEMU, cleanly.
              if (signal === 'SIGTERM') expect(status.code, context()).toBe(0);
              const last = await backends[1]!.process.wait(10_000);
              expect(last.code, context()).toBe(0);
            }
          } finally {
            await vm.stop({ signal: 'SIGKILL' });
            for (const backend of backends) await backend.stop();
          }
        },
        TEST_TIMEOUT_MS,
      );
    }
  },
);

describe.skipIf(guestSkip !== undefined || virtkitSkip !== undefined)(
  'vhost-user-blk backend killed with writes in flight',
  () => {
    let kernel: string;
    let initrd: string;
    let work: string;

    beforeAll(async () => {
      kernel = (await prepareX86Guest()).kernel;
      initrd = await scriptInitramfs(busyReconnectScript());
      work = mkdtempSync(join(tmpdir(), 'virtkit-e2e-busy-'));
    }, 600_000);

    afterAll(() => {
      if (work) rmSync(work, { recursive: true, force: true });
    });

    for (const packed of [false, true]) {
      it(
        `${BLK_SERVER_NAMES.virtkit} killed with SIGKILL mid-write and restarted (${packed ? 'packed' : 'split'} ring): every write completes once, data correct`,
        async () => {
          const dir = mkdtempSync(join(work, 'virtkit-'));
          const image = join(dir, 'disk.img');
          createRawImage(image, BUSY_LAYOUT.size);
          const disk = await attachBlk('virtkit', {
            image,
            socketDir: dir,
            reconnect: 1,
            ...(packed ? { packed: true } : {}),
          });
          if (disk.attachment.kind !== 'vhost-user') throw new Error('expected a vhost-user disk');
          const socket = disk.attachment.socket;
          const backends: VhostUserBackend[] = [disk.backend!];
          const vm = startGuestVm({ kernel, initrd, blk: [disk.attachment] });
          const context = () => runContext(vm, backends);
          try {
            await vm.waitFor(BUSY_MARKER, { timeoutMs: STEP_TIMEOUT_MS });
            // Let the writers get going, then crash the backend under them, at an instant it
            // holds requests in flight.
            await new Promise((wake) => setTimeout(wake, BUSY_RUN_MS));
            const inFlight = await killWithRequestsInFlight(backends[0]!);
            const next = await startVirtkitBackend({ socket, device: `blk,path=${image}` });
            backends.push(next);
            await next.connected(RECONNECT_TIMEOUT_MS);
            // The writers run on through the new backend for a while before they are stopped.
            await new Promise((wake) => setTimeout(wake, BUSY_RUN_MS));
            vm.write('go\n');
            const end = await vm.wait(STEP_TIMEOUT_MS);
            expect(end.timedOut, context()).toBe(false);
            expect(checkBusyReconnectRun(vm.output, image), context()).toEqual([]);
            expect(end.code, context()).toBe(0);
            // Writes were in flight at the kill, and the new backend took them over.
            const resubmitted = /queue \d+: resubmitting (\d+) requests left in flight/.exec(
              next.process.output,
            );
            expect(resubmitted, context()).not.toBeNull();
            // Fewer only if the kill fell inside a publication: recovery then clears the entries
            // the guest already saw.
            expect(Number(resubmitted![1]), context()).toBeLessThanOrEqual(inFlight);
            const last = await next.process.wait(10_000);
            expect(last.code, context()).toBe(0);
          } finally {
            await vm.stop({ signal: 'SIGKILL' });
            for (const backend of backends) await backend.stop();
          }
        },
        TEST_TIMEOUT_MS,
      );
    }
  },
);

/**
 * SIGKILLs `backend` at an instant when it holds requests in flight, and returns how many. The
 * backend is frozen (SIGSTOP) and its inflight area read: the memfd it created for
 * GET_INFLIGHT_FD, which QEMU keeps and hands to the next backend, opened through
 * /proc/PID/map_files. If a descriptor is marked in flight, the frozen process is killed, so the
 * record the next backend finds is exactly the one read; otherwise it is thawed and tried again a
 * moment later. (Killing while an I/O thread is inside a write or `fdatasync` was not enough: the
 * call often ended, and its request completed, before the signal landed.)
 */
async function killWithRequestsInFlight(
  backend: VhostUserBackend,
  timeoutMs = 20_000,
): Promise<number> {
  const pid = backend.process.pid;
  if (pid === undefined) throw new Error('the backend has no process id');
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    process.kill(pid, 'SIGSTOP');
    // The main thread is the only one that writes the record: wait until it has stopped.
    while (!/^\d+ \(.*\) T /.test(readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8'))) {
      await new Promise((wake) => setImmediate(wake));
    }
    const inFlight = Math.max(0, ...inflightAreas(pid).map(markedInFlight));
    if (inFlight > 0) {
      await backend.stop('SIGKILL');
      return inFlight;
    }
    process.kill(pid, 'SIGCONT');
    await new Promise((wake) => setTimeout(wake, 1 + Math.random() * 4));
  }
  throw new Error(`the backend held no request in flight at any check in ${timeoutMs} ms`);
}

/** The contents of each mapping of the backend's inflight memfd (see vhost-user's inflight.ts). */
function inflightAreas(pid: number): Buffer[] {
  return readFileSync(`/proc/${pid}/maps`, 'utf8')
    .split('\n')
    .filter((line) => line.includes('memfd:virtkit-vhost-inflight'))
    .map((line) => readFileSync(`/proc/${pid}/map_files/${line.split(' ')[0]}`));
}

/**
 * Descriptors marked in flight in queue 0's record: a split record has a 16-byte header and a
 * 16-byte state per descriptor, a packed one (bit 0 of its first word set by Virtkit) 32 and 32;
 * the state's first byte is its `inflight` flag, the header's u16 at 10 the ring size.
 */
function markedInFlight(area: Buffer): number {
  if (area.length < 32) return 0;
  const [header, entry] = (area.readUInt32LE(0) & 1) !== 0 ? [32, 32] : [16, 16];
  const size = Math.min(area.readUInt16LE(10), Math.floor((area.length - header) / entry));
  let count = 0;
  for (let i = 0; i < size; i++) if (area[header + entry * i] === 1) count++;
  return count;
}
