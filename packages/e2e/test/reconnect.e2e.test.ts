/**
 * Backend restart: QEMU's vhost-user-blk chardev has `reconnect=1`; the guest writes and
 * verifies data, idles while the test stops the backend and starts a new one on the same socket,
 * and then reads its data back and writes more. The host checks both writes in the image.
 *
 * Runs against our backend (stopped with SIGTERM, and killed with SIGKILL as a crash, on split
 * and packed rings) and qemu-storage-daemon as the control. Then our backend is killed while the
 * guest has writes in flight: the new one resubmits them from the inflight area.
 */

import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
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
            // Let the writers get going, then crash the backend under them, at an instant one of
            // its I/O threads is writing or syncing the image (a request is surely in flight).
            await new Promise((wake) => setTimeout(wake, BUSY_RUN_MS));
            await killDuringFileIo(backends[0]!);
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
            expect(next.process.output, context()).toMatch(
              /queue \d+: resubmitting \d+ requests left in flight/,
            );
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

/** x86_64 system calls an I/O thread makes for a write or flush request. */
const FILE_IO_SYSCALLS = new Set([1, 18, 20, 74, 75, 296, 328]);

/**
 * SIGKILLs `backend` while one of its threads other than the main one is inside a file write or
 * sync (read from /proc/PID/task/TID/syscall), or after `timeoutMs` if that never happens.
 */
async function killDuringFileIo(backend: VhostUserBackend, timeoutMs = 10_000): Promise<void> {
  const pid = backend.process.pid;
  const deadline = Date.now() + timeoutMs;
  while (pid !== undefined && Date.now() < deadline) {
    let busy = false;
    try {
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        if (Number(tid) === pid) continue;
        const call = Number(readFileSync(`/proc/${pid}/task/${tid}/syscall`, 'utf8').split(' ')[0]);
        if (FILE_IO_SYSCALLS.has(call)) busy = true;
      }
    } catch {
      // a thread came or went; look again
    }
    if (busy) break;
    await new Promise((wake) => setImmediate(wake));
  }
  await backend.stop('SIGKILL');
}
