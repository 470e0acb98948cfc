/**
 * The discard scenario: a fully written image; the guest's own virtio-blk driver discards a range
 * in the middle of it (busybox `blkdiscard`, which the block layer turns into DISCARD requests of
 * at most the device's `max_discard_sectors`, possibly several ranges per request), and reads the
 * data on both sides back. The host then checks that the range left the image (the file system
 * freed its blocks, and it reads as zeros) and that nothing else changed.
 */

import { statSync } from 'node:fs';
import { createRawImage, type DiskRegion, md5, patternBytes, readRange } from '../disk.js';
import { guestReports } from '../guest.js';

const MiB = 1024 * 1024;

/** The disk: `size` bytes of pattern; `[discardOffset, +discardBytes)` is discarded. */
export const DISCARD_LAYOUT = {
  size: 32 * MiB,
  discardOffset: 8 * MiB,
  discardBytes: 16 * MiB,
} as const;

/** The data before and after the discarded range. */
export function discardKeptRegions(): DiskRegion[] {
  const L = DISCARD_LAYOUT;
  const end = L.discardOffset + L.discardBytes;
  return [
    { name: 'before', offset: 0, data: patternBytes(11, L.discardOffset) },
    { name: 'after', offset: end, data: patternBytes(12, L.size - end) },
  ];
}

/**
 * Writes the scenario's image to `path`, every byte of it (the discarded range too, so that its
 * blocks are allocated), and returns its allocated 512-byte units (`st_blocks`).
 */
export function createDiscardImage(path: string): number {
  const L = DISCARD_LAYOUT;
  createRawImage(path, L.size, [
    ...discardKeptRegions(),
    { name: 'discarded', offset: L.discardOffset, data: patternBytes(13, L.discardBytes) },
  ]);
  return statSync(path).blocks;
}

/** The guest script. */
export function discardScript(): string {
  const L = DISCARD_LAYOUT;
  const chunk = MiB;
  const lines = [
    'dev=/dev/vda',
    'q=/sys/block/vda/queue',
    'echo "E2E discard-limits $(cat $q/discard_max_bytes) $(cat $q/discard_granularity)"',
    `if blkdiscard -o ${L.discardOffset} -l ${L.discardBytes} $dev; then echo "E2E discard ok"; else echo "E2E discard FAILED"; fi`,
  ];
  for (const region of discardKeptRegions()) {
    lines.push(
      `echo "E2E kept-${region.name} $(dd if=$dev bs=${chunk} skip=${region.offset / chunk} count=${region.data.length / chunk} iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"`,
    );
  }
  lines.push('');
  return lines.join('\n');
}

/**
 * Problems in a run of {@link discardScript} on `image`, which had `blocksBefore` allocated
 * 512-byte units before the run (empty when the discard went through and nothing else changed).
 */
export function checkDiscardRun(output: string, image: string, blocksBefore: number): string[] {
  const L = DISCARD_LAYOUT;
  const reports = guestReports(output);
  const problems: string[] = [];
  const limits = reports.get('discard-limits');
  const maxBytes = limits === undefined ? undefined : Number(limits.split(' ')[0]);
  if (maxBytes === undefined || !(maxBytes > 0)) {
    problems.push(
      `the guest sees no discard support (discard_max_bytes ${limits === undefined ? 'not reported' : maxBytes})`,
    );
  }
  if (reports.get('discard') !== 'ok') problems.push('blkdiscard failed in the guest');
  for (const region of discardKeptRegions()) {
    const want = md5(region.data);
    const seen = reports.get(`kept-${region.name}`);
    if (seen !== want) problems.push(`guest: the data ${region.name} the range reads ${seen}`);
    const got = md5(readRange(image, region.offset, region.data.length));
    if (got !== want) problems.push(`image: the data ${region.name} the range changed`);
  }
  const discarded = readRange(image, L.discardOffset, L.discardBytes);
  if (discarded.some((byte) => byte !== 0))
    problems.push('image: the discarded range is not zeros');
  const freed = blocksBefore - statSync(image).blocks;
  if (freed < L.discardBytes / 512) {
    problems.push(
      `image: ${freed} 512-byte units freed, the discarded range has ${L.discardBytes / 512}`,
    );
  }
  return problems;
}
