/**
 * Disk images for guest tests: raw images holding reproducible data at known offsets (the guest
 * checks them by md5, the host checks what the guest wrote), and small ext4 images made from a
 * directory with `mkfs.ext4 -d`.
 */

import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { E2eError } from './errors.js';
import { runCommand } from './process.js';

/**
 * `length` reproducible pseudo-random bytes for `seed` (xorshift32 per 4-byte word), the same on
 * every run, so a test can place them in an image and embed their digest in a guest script.
 */
export function patternBytes(seed: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  let state = (seed * 2654435761 + 0x9e3779b9) >>> 0 || 1;
  for (let offset = 0; offset < length; offset += 4) {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    if (offset + 4 <= length) out.writeUInt32LE(state, offset);
    else for (let i = offset; i < length; i++) out[i] = (state >>> ((i - offset) * 8)) & 0xff;
  }
  return out;
}

/** A range of a disk image with the data it holds. */
export interface DiskRegion {
  readonly name: string;
  readonly offset: number;
  readonly data: Uint8Array;
}

/** md5 of `data` as lower-case hex (busybox `md5sum` prints the same). */
export function md5(data: Uint8Array): string {
  return createHash('md5').update(data).digest('hex');
}

/** sha256 of `data` as lower-case hex. */
export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Writes a sparse raw image of `size` bytes with `regions` at their offsets (everything else
 * reads as zeros). Overwrites an existing file.
 */
export function createRawImage(path: string, size: number, regions: readonly DiskRegion[] = []) {
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, size);
    for (const region of regions) {
      if (region.offset + region.data.length > size) {
        throw new E2eError(
          'INVALID_OPTIONS',
          `region ${region.name} (${region.offset}+${region.data.length}) is past the end of a ${size}-byte image`,
        );
      }
      writeSync(fd, region.data, 0, region.data.length, region.offset);
    }
  } finally {
    closeSync(fd);
  }
}

/** Reads `length` bytes at `offset` of a file. */
export function readRange(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const out = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, out, done, length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    return out.subarray(0, done);
  } finally {
    closeSync(fd);
  }
}

/** Options of {@link createExt4Image}. */
export interface Ext4ImageOptions {
  /** Image size in MiB. */
  readonly sizeMiB: number;
  /** Directory whose contents become the filesystem's root (`mkfs.ext4 -d`). */
  readonly fromDirectory?: string;
  readonly label?: string;
}

/** Makes a raw ext4 image with `mkfs.ext4` (e2fsprogs), optionally populated from a directory. */
export async function createExt4Image(path: string, options: Ext4ImageOptions): Promise<void> {
  createRawImage(path, options.sizeMiB << 20);
  await runCommand('mkfs.ext4', [
    '-q',
    '-F',
    // No lazy init: the guest should not spend its first minutes zeroing inode tables.
    '-E',
    'lazy_itable_init=0,lazy_journal_init=0',
    ...(options.label !== undefined ? ['-L', options.label] : []),
    ...(options.fromDirectory !== undefined ? ['-d', options.fromDirectory] : []),
    path,
  ]);
}
