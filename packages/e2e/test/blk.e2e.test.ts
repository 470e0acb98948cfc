/**
 * Block devices in a real Linux guest (QEMU TCG, q35): the guest verifies known data, writes,
 * flushes, reboots inside the same QEMU run (the device is reset and re-initialized), verifies its
 * writes again, and the host checks the image. Variants: num-queues=2 (with 2 vCPUs, both queues
 * must carry requests), packed=on (the guest must negotiate VIRTIO_F_RING_PACKED); and in single
 * boots: a read-only disk that refuses writes, 4 KiB logical blocks, GET_ID (the serial number),
 * the write cache switched by the guest (CONFIG_WCE), and DISCARD (busybox `blkdiscard` punches a
 * range out of the image).
 *
 * Each scenario runs against our vhost-user-blk backend and, as controls that keep the harness
 * honest, qemu-storage-daemon's vhost-user-blk export and QEMU's built-in virtio-blk.
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type AttachBlkOptions,
  type AttachedBlk,
  attachBlk,
  BLK_SERVER_NAMES,
  type BlkServer,
} from '../src/attach.js';
import { createRawImage } from '../src/disk.js';
import { outputTail } from '../src/errors.js';
import { guestReports, prepareX86Guest, scriptInitramfs } from '../src/guest.js';
import { type GuestRunResult, runGuestVm } from '../src/qemu.js';
import {
  blkScript,
  checkBlkRun,
  checkReadOnlyRun,
  createBlkImage,
  imageDigest,
  readOnlyScript,
} from '../src/scenarios/blk.js';
import { CACHE_LAYOUT, cacheModeScript, checkCacheModeRun } from '../src/scenarios/cache.js';
import { checkDiscardRun, createDiscardImage, discardScript } from '../src/scenarios/discard.js';
import { checkSectorRun, SECTOR_LAYOUT, sectorScript } from '../src/scenarios/sector.js';
import {
  guestSkipReason,
  reportSkip,
  storageDaemonSkipReason,
  virtkitSkipReason,
} from '../src/skip.js';

/** A boot is ~4 s of TCG; this scenario boots twice, and parallel test files share 2 CPUs. */
const RUN_TIMEOUT_MS = 90_000;
const MiB = 1024 * 1024;
/** 20 bytes, the most GET_ID carries (virtio 1.2 §5.2.6). */
const SERIAL = 'VIRTKIT-E2E-SERIAL20';
const TEST_TIMEOUT_MS = 120_000;

const guestSkip = await guestSkipReason();
reportSkip('block device guest tests', guestSkip);
const serverSkip: Record<BlkServer, string | undefined> = {
  virtkit: virtkitSkipReason(),
  qsd: storageDaemonSkipReason(),
  builtin: undefined,
};
for (const server of ['virtkit', 'qsd'] as const) {
  if (guestSkip === undefined) reportSkip(BLK_SERVER_NAMES[server], serverSkip[server]);
}

describe.skipIf(guestSkip !== undefined)('block devices in a Linux guest', () => {
  let kernel: string;
  let work: string;
  const initrds = new Map<string, string>();

  beforeAll(async () => {
    kernel = (await prepareX86Guest()).kernel;
    work = mkdtempSync(join(tmpdir(), 'virtkit-e2e-blk-'));
    initrds.set('rw', await scriptInitramfs(blkScript()));
    initrds.set('mq', await scriptInitramfs(blkScript({ queues: 2 })));
    initrds.set('ro', await scriptInitramfs(readOnlyScript()));
    initrds.set('discard', await scriptInitramfs(discardScript()));
    initrds.set('cache', await scriptInitramfs(cacheModeScript()));
    initrds.set('4k', await scriptInitramfs(sectorScript()));
    // virtio_blk's `serial` attribute sends a GET_ID request each time it is read.
    initrds.set(
      'serial',
      await scriptInitramfs('echo "E2E serial $(cat /sys/block/vda/serial)"\n'),
    );
  }, 600_000);

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  interface Variant {
    readonly name: string;
    readonly queues?: number;
    readonly packed?: boolean;
    /** Our I/O engine, on an O_DIRECT image (ours only). */
    readonly aio?: 'sync';
  }
  const variants: readonly Variant[] = [
    { name: 'single queue, split ring' },
    { name: 'num-queues=2 on 2 vCPUs', queues: 2 },
    { name: 'packed=on', packed: true },
    { name: 'aio=sync with direct=on', aio: 'sync' },
  ];
  /** qemu-storage-daemon serves through libvhost-user, which has no packed virtqueues. */
  const unsupported = (server: BlkServer, variant: Variant): boolean =>
    (server === 'qsd' && variant.packed === true) ||
    (server !== 'virtkit' && variant.aio !== undefined);

  for (const server of ['virtkit', 'qsd', 'builtin'] as const) {
    describe.skipIf(serverSkip[server] !== undefined)(BLK_SERVER_NAMES[server], () => {
      for (const variant of variants.filter((v) => !unsupported(server, v))) {
        it(
          `${variant.name}: verifies known data, writes, flushes, reboots, verifies again`,
          async () => {
            const dir = mkdtempSync(join(work, `${server}-`));
            const image = join(dir, 'disk.img');
            createBlkImage(image);
            const disk = await attachBlk(server, {
              image,
              socketDir: dir,
              ...(variant.queues !== undefined ? { queues: variant.queues } : {}),
              ...(variant.packed ? { packed: true } : {}),
              ...(variant.aio ? { aio: variant.aio, direct: true } : {}),
            });
            try {
              const run = await runGuestVm({
                kernel,
                initrd: initrds.get(variant.queues ? 'mq' : 'rw')!,
                exit: 'poweroff',
                reboot: true,
                cpus: variant.queues ?? 1,
                blk: [disk.attachment],
                timeoutMs: RUN_TIMEOUT_MS,
              });
              const backendLog = disk.backend
                ? `\nbackend:\n${outputTail(disk.backend.process.output)}`
                : '';
              const context = `${outputTail(run.output, 80)}${backendLog}`;
              expect(run.timedOut, context).toBe(false);
              const problems = checkBlkRun(run.output, image, {
                ...(variant.queues !== undefined ? { queues: variant.queues } : {}),
                packed: variant.packed === true,
              });
              expect(problems, context).toEqual([]);
              expect(run.qemuStatus, context).toBe(0);
              if (server === 'virtkit') {
                // Ours ends when its front-end goes away (QEMU exited): cleanly, status 0.
                const backendEnd = await disk.backend!.process.wait(10_000);
                expect(backendEnd.code, outputTail(disk.backend!.process.output)).toBe(0);
              }
            } finally {
              await disk.close();
            }
          },
          TEST_TIMEOUT_MS,
        );
      }

      /**
       * One boot of `initrd` against a disk `server` serves from a fresh image (written by
       * `create`): the run must end by itself, `check` must pass, QEMU must exit 0, and ours
       * must end cleanly once QEMU has gone.
       */
      async function singleBoot(
        name: string,
        initrd: string,
        create: (image: string) => void,
        attach: Omit<AttachBlkOptions, 'image' | 'socketDir'>,
        check: (run: GuestRunResult, image: string, context: string, disk: AttachedBlk) => void,
      ): Promise<void> {
        const dir = mkdtempSync(join(work, `${server}-${name}-`));
        const image = join(dir, 'disk.img');
        create(image);
        const disk = await attachBlk(server, { image, socketDir: dir, ...attach });
        try {
          const run = await runGuestVm({
            kernel,
            initrd: initrds.get(initrd)!,
            exit: 'poweroff',
            blk: [disk.attachment],
            timeoutMs: RUN_TIMEOUT_MS,
          });
          const backendLog = disk.backend
            ? `\nbackend:\n${outputTail(disk.backend.process.output)}`
            : '';
          const context = `${outputTail(run.output, 60)}${backendLog}`;
          expect(run.timedOut, context).toBe(false);
          check(run, image, context, disk);
          expect(run.qemuStatus, context).toBe(0);
          if (server === 'virtkit') {
            const backendEnd = await disk.backend!.process.wait(10_000);
            expect(backendEnd.code, outputTail(disk.backend!.process.output)).toBe(0);
          }
        } finally {
          await disk.close();
        }
      }

      it(
        'a read-only disk reads back and refuses writes; the image is unchanged',
        async () => {
          let before = '';
          await singleBoot(
            'ro',
            'ro',
            (image) => {
              createBlkImage(image);
              before = imageDigest(image);
            },
            { readonly: true },
            (run, image, context) => {
              expect(checkReadOnlyRun(run.output, image, before), context).toEqual([]);
            },
          );
        },
        TEST_TIMEOUT_MS,
      );

      it(
        '4 KiB logical blocks: the guest sees them, and whole blocks go through with O_DIRECT and the page cache',
        async () => {
          await singleBoot(
            '4k',
            '4k',
            (image) => createRawImage(image, SECTOR_LAYOUT.size),
            { blockSize: SECTOR_LAYOUT.block },
            (run, image, context) => {
              expect(checkSectorRun(run.output, image), context).toEqual([]);
            },
          );
        },
        TEST_TIMEOUT_MS,
      );

      it.skipIf(server === 'qsd')(
        "GET_ID: the guest reads the disk's serial number (qemu-storage-daemon has none)",
        async () => {
          await singleBoot(
            'id',
            'serial',
            (image) => createRawImage(image, MiB),
            { serial: SERIAL },
            (run, _image, context) => {
              expect(guestReports(run.output).get('serial'), context).toBe(SERIAL);
            },
          );
        },
        TEST_TIMEOUT_MS,
      );

      it(
        'the guest switches the write cache to writethrough and back (CONFIG_WCE), and writes meanwhile',
        async () => {
          await singleBoot(
            'wce',
            'cache',
            (image) => createRawImage(image, CACHE_LAYOUT.size),
            {},
            (run, image, context, disk) => {
              // Ours starts in writeback (write_cache=on), as QEMU's own virtio-blk does.
              const initial = server === 'qsd' ? undefined : 'write back';
              expect(checkCacheModeRun(run.output, image, initial), context).toEqual([]);
              if (server === 'virtkit') {
                // The configuration write reached our device, not only QEMU's copy of the config.
                expect(disk.backend!.process.output, context).toMatch(
                  /switched the write cache to writethrough[\s\S]*switched the write cache to writeback/,
                );
              }
            },
          );
        },
        TEST_TIMEOUT_MS,
      );

      it(
        'DISCARD from the guest (blkdiscard) punches the range out of the image; the rest is unchanged',
        async () => {
          let blocksBefore = 0;
          await singleBoot(
            'discard',
            'discard',
            (image) => {
              blocksBefore = createDiscardImage(image);
            },
            { discard: true },
            (run, image, context) => {
              expect(checkDiscardRun(run.output, image, blocksBefore), context).toEqual([]);
            },
          );
        },
        TEST_TIMEOUT_MS,
      );
    });
  }
});
