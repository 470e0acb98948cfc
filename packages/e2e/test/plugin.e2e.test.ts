/**
 * A third-party device plugin in a real Linux guest: the example virtio-rng plugin
 * (`examples/rng-device`, written against @virtkit/core's public API only) is loaded into
 * `virtkit vhost-user` with `--plugin` and attached to QEMU as `vhost-user-rng-pci`. The guest's
 * own virtio_rng driver must make it the hardware RNG and read random bytes through it, on a split
 * and on a packed ring. This is the "any Virtkit device" half of the vhost-user back-end: nothing
 * in it knows about rng.
 */

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repositoryRoot, startVirtkitBackend } from '../src/backend.js';
import { outputTail } from '../src/errors.js';
import { prepareX86Guest, scriptInitramfs } from '../src/guest.js';
import { runGuestVm } from '../src/qemu.js';
import { checkRngRun, rngScript } from '../src/scenarios/rng.js';
import { guestSkipReason, reportSkip, virtkitSkipReason } from '../src/skip.js';

const RUN_TIMEOUT_MS = 90_000;
const TEST_TIMEOUT_MS = 120_000;

const plugin = join(repositoryRoot(), 'examples', 'rng-device', 'dist', 'index.js');
const guestSkip = await guestSkipReason();
const skip =
  guestSkip ??
  virtkitSkipReason() ??
  (existsSync(plugin) ? undefined : `${plugin} is not built (pnpm build)`);
reportSkip('the third-party plugin guest test', skip);

describe.skipIf(skip !== undefined)('a third-party device plugin in a Linux guest', () => {
  let kernel: string;
  let initrd: string;
  let work: string;

  beforeAll(async () => {
    kernel = (await prepareX86Guest()).kernel;
    initrd = await scriptInitramfs(rngScript());
    work = mkdtempSync(join(tmpdir(), 'virtkit-e2e-plugin-'));
  }, 600_000);

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  for (const packed of [false, true]) {
    it(
      `examples/rng-device as vhost-user-rng-pci (${packed ? 'packed' : 'split'} ring): the guest's virtio_rng reads random bytes from it`,
      async () => {
        const socket = join(mkdtempSync(join(work, 'rng-')), 'rng.sock');
        const backend = await startVirtkitBackend({
          socket,
          device: 'rng',
          extraArgs: ['--plugin', plugin],
        });
        try {
          const run = await runGuestVm({
            kernel,
            initrd,
            exit: 'poweroff',
            sharedMemory: true,
            extraArgs: [
              '-chardev',
              `socket,id=rng0,path=${socket}`,
              '-device',
              `vhost-user-rng-pci,chardev=rng0${packed ? ',packed=on' : ''}`,
            ],
            timeoutMs: RUN_TIMEOUT_MS,
          });
          const context = `${outputTail(run.output, 60)}\nbackend:\n${outputTail(backend.process.output)}`;
          expect(run.timedOut, context).toBe(false);
          expect(checkRngRun(run.output), context).toEqual([]);
          expect(run.qemuStatus, context).toBe(0);
          // The ring layout the guest's driver negotiated with our back-end.
          expect(backend.process.output, context).toMatch(
            new RegExp(`device active: ${packed ? 'packed' : 'split'} rings`),
          );
          // Ours ends when its front-end goes away (QEMU exited): cleanly, status 0.
          const end = await backend.process.wait(10_000);
          expect(end.code, context).toBe(0);
        } finally {
          await backend.stop();
        }
      },
      TEST_TIMEOUT_MS,
    );
  }
});
