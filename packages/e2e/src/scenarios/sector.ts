/**
 * The 4 KiB-sector scenario: the disk reports a 4096-byte logical block (`blk_size`,
 * VIRTIO_BLK_F_BLK_SIZE). The guest must see it, and reads and writes in whole 4 KiB blocks must
 * work, with O_DIRECT and through the page cache (whose 4 KiB pages then map to single sectors).
 * The host checks the image. (A 512-byte O_DIRECT write from busybox `dd` is not a usable probe:
 * it succeeded against all three servers.)
 */

import { md5, readRange } from '../disk.js';
import { guestReports } from '../guest.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** The image: `size` bytes; O_DIRECT writes land at `directOffset`, buffered ones at `bufferedOffset`. */
export const SECTOR_LAYOUT = {
  size: 8 * MiB,
  block: 4096,
  directOffset: 1 * MiB,
  bufferedOffset: 3 * MiB + 4 * KiB,
  writeBytes: 256 * KiB,
} as const;

/** The guest script. */
export function sectorScript(): string {
  const L = SECTOR_LAYOUT;
  const q = '/sys/block/vda/queue';
  return [
    `echo "E2E sizes $(cat ${q}/logical_block_size) $(cat ${q}/physical_block_size) $(cat /sys/block/vda/size)"`,
    `dd if=/dev/urandom of=/tmp/direct bs=4096 count=${L.writeBytes / 4096} 2>/dev/null`,
    `dd if=/dev/urandom of=/tmp/buffered bs=4096 count=${L.writeBytes / 4096} 2>/dev/null`,
    `dd if=/tmp/direct of=/dev/vda bs=4096 seek=${L.directOffset / 4096} oflag=direct conv=notrunc 2>/dev/null || echo "E2E direct-write FAILED"`,
    `dd if=/tmp/buffered of=/dev/vda bs=4096 seek=${L.bufferedOffset / 4096} conv=notrunc,fsync 2>/dev/null || echo "E2E buffered-write FAILED"`,
    'echo 3 > /proc/sys/vm/drop_caches',
    `echo "E2E direct $(md5sum /tmp/direct | cut -d' ' -f1) $(dd if=/dev/vda bs=4096 skip=${L.directOffset / 4096} count=${L.writeBytes / 4096} iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"`,
    `echo "E2E buffered $(md5sum /tmp/buffered | cut -d' ' -f1) $(dd if=/dev/vda bs=4096 skip=${L.bufferedOffset / 4096} count=${L.writeBytes / 4096} 2>/dev/null | md5sum | cut -d' ' -f1)"`,
    '',
  ].join('\n');
}

/** Problems in a run of {@link sectorScript} on `image` (empty when it passed). */
export function checkSectorRun(output: string, image: string): string[] {
  const L = SECTOR_LAYOUT;
  const reports = guestReports(output);
  const problems: string[] = [];
  // /sys/block/*/size counts 512-byte sectors whatever the logical block size.
  const sizes = `${L.block} ${L.block} ${L.size / 512}`;
  if (reports.get('sizes') !== sizes) {
    problems.push(`guest: sizes '${reports.get('sizes') ?? '(not reported)'}', want '${sizes}'`);
  }
  for (const key of ['direct-write', 'buffered-write']) {
    if (reports.get(key) === 'FAILED') problems.push(`guest: ${key} failed`);
  }
  for (const [key, offset] of [
    ['direct', L.directOffset],
    ['buffered', L.bufferedOffset],
  ] as const) {
    const [wrote, read] = (reports.get(key) ?? '').split(' ');
    if (!wrote || wrote !== read) {
      problems.push(`guest: the ${key} write reads back as ${read ?? '(nothing)'}, wrote ${wrote}`);
      continue;
    }
    const got = md5(readRange(image, offset, L.writeBytes));
    if (got !== wrote)
      problems.push(`image: the ${key} write has md5 ${got}, the guest wrote ${wrote}`);
  }
  return problems;
}
