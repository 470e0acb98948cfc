/**
 * The write-cache scenario: the guest switches the disk's cache mode through virtio_blk's own
 * `cache_type` attribute, which writes the `writeback` field of the device's configuration
 * (VIRTIO_BLK_F_CONFIG_WCE; over vhost-user QEMU passes it on with SET_CONFIG), reads the mode
 * back, writes data while the disk is in writethrough mode, and switches back. The host checks the
 * data in the image.
 */

import { md5, readRange } from '../disk.js';
import { guestReports } from '../guest.js';

const MiB = 1024 * 1024;

/** The image: `size` bytes; the guest writes `writeBytes` at `writeOffset` in writethrough mode. */
export const CACHE_LAYOUT = { size: 8 * MiB, writeOffset: 1 * MiB, writeBytes: 1 * MiB } as const;

/** The guest script. */
export function cacheModeScript(): string {
  const L = CACHE_LAYOUT;
  const attr = '/sys/block/vda/cache_type';
  const queue = '/sys/block/vda/queue/write_cache';
  const mode = (name: string) => `echo "E2E ${name} $(cat ${attr}) / $(cat ${queue})"`;
  return [
    mode('mode-initial'),
    `echo "write through" > ${attr} || echo "E2E set-through FAILED"`,
    mode('mode-through'),
    `dd if=/dev/urandom of=/tmp/data bs=65536 count=${L.writeBytes / 65536} 2>/dev/null`,
    `if dd if=/tmp/data of=/dev/vda bs=65536 seek=${L.writeOffset / 65536} oflag=direct conv=notrunc 2>/dev/null; then echo "E2E write ok"; else echo "E2E write FAILED"; fi`,
    `echo "E2E wrote $(md5sum /tmp/data | cut -d' ' -f1)"`,
    `echo "write back" > ${attr} || echo "E2E set-back FAILED"`,
    mode('mode-back'),
    '',
  ].join('\n');
}

/**
 * Problems in a run of {@link cacheModeScript} on `image` (empty when it passed). `initial` is the
 * mode the device starts in, when the test knows it (servers differ: qemu-storage-daemon's export
 * starts in writethrough).
 */
export function checkCacheModeRun(
  output: string,
  image: string,
  initial?: 'write back' | 'write through',
): string[] {
  const L = CACHE_LAYOUT;
  const reports = guestReports(output);
  const problems: string[] = [];
  const expected: [string, string][] = [
    ...(initial ? [['mode-initial', `${initial} / ${initial}`] as [string, string]] : []),
    ['mode-through', 'write through / write through'],
    ['mode-back', 'write back / write back'],
  ];
  for (const [key, want] of expected) {
    const seen = reports.get(key);
    if (seen !== want)
      problems.push(`guest: ${key} is '${seen ?? '(not reported)'}', want '${want}'`);
  }
  for (const key of ['set-through', 'set-back']) {
    if (reports.get(key) === 'FAILED') problems.push(`guest: writing cache_type (${key}) failed`);
  }
  if (reports.get('write') !== 'ok') problems.push('guest: the write in writethrough mode failed');
  const wrote = reports.get('wrote');
  const got = md5(readRange(image, L.writeOffset, L.writeBytes));
  if (wrote === undefined) problems.push('the guest did not report what it wrote');
  else if (got !== wrote)
    problems.push(`image: the write has md5 ${got}, the guest wrote ${wrote}`);
  return problems;
}
