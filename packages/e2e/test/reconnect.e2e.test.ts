/**
 * Backend restart: QEMU's vhost-user-blk chardev has `reconnect=1`; the guest writes and
 * verifies data, idles while the test stops the backend and starts a new one on the same socket,
 * and then reads its data back and writes more. The host checks both writes in the image.
 *
 * Runs against our backend (stopped with SIGTERM, and killed with SIGKILL as a crash) and
 * qemu-storage-daemon as the control.
 */

import { mkdtempSync, rmSync } from 'node:fs';
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
      { server: 'virtkit', signal: 'SIGTERM', skip: virtkitSkip },
      { server: 'virtkit', signal: 'SIGKILL', skip: virtkitSkip },
      { server: 'qsd', signal: 'SIGTERM', skip: qsdSkip },
    ] as const;

    for (const { server, signal, skip } of cases) {
      it.skipIf(skip !== undefined)(
        `${BLK_SERVER_NAMES[server]} stopped with ${signal} and restarted: I/O continues with correct data`,
        async () => {
          const dir = mkdtempSync(join(work, `${server}-`));
          const image = join(dir, 'disk.img');
          createRawImage(image, RECONNECT_LAYOUT.size);
          const disk = await attachBlk(server, { image, socketDir: dir, reconnect: 1 });
          if (disk.attachment.kind !== 'vhost-user') throw new Error('expected a vhost-user disk');
          const socket = disk.attachment.socket;
          const restart = (): Promise<VhostUserBackend> =>
            server === 'virtkit'
              ? startVirtkitBackend({ socket, device: `blk,path=${image}` })
              : startStorageDaemon({ socket, image });
          const backends: VhostUserBackend[] = [disk.backend!];
          const vm = startGuestVm({ kernel, initrd, blk: [disk.attachment] });
          const context = () =>
            `${outputTail(vm.output, 60)}\n${backends
              .map((backend, i) => `backend #${i + 1}:\n${outputTail(backend.process.output, 20)}`)
              .join('\n')}`;
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
