/**
 * A writer (and a small reader) for the cpio "newc" format (magic `070701`), the format Linux
 * unpacks an initramfs from (Documentation/driver-api/early-userspace/buffer-format.rst).
 *
 * Output is byte-identical to GNU cpio's `-o -H newc --reproducible --owner 0:0` for the same
 * entries: upper-case hex fields, inode numbers counted from 0, device fields of the archived
 * filesystem zeroed, uid/gid 0, one fixed mtime, and the archive padded to 512-byte blocks.
 */

import { createWriteStream } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, gzip } from 'node:zlib';
import { GuestError } from './errors.js';

/** A regular file. `data` given as a string is stored as UTF-8. */
export interface CpioFile {
  readonly type: 'file';
  /** Path inside the archive; a leading `/` is dropped (`/init` is stored as `init`). */
  readonly path: string;
  readonly data: Uint8Array | string;
  /** Permission bits; default 0o644. */
  readonly mode?: number;
}

/** A directory. Directories are not created implicitly: add parents before their children. */
export interface CpioDirectory {
  readonly type: 'directory';
  readonly path: string;
  /** Permission bits; default 0o755. */
  readonly mode?: number;
}

/** A symbolic link to `target` (stored as the link's data, as in every cpio format). */
export interface CpioSymlink {
  readonly type: 'symlink';
  readonly path: string;
  readonly target: string;
}

/** A character or block device node, such as `/dev/console` (c 5 1). */
export interface CpioDevice {
  readonly type: 'char-device' | 'block-device';
  readonly path: string;
  readonly major: number;
  readonly minor: number;
  /** Permission bits; default 0o600. */
  readonly mode?: number;
}

/** One member of a cpio archive. */
export type CpioEntry = CpioFile | CpioDirectory | CpioSymlink | CpioDevice;

/** Options shared by the cpio writers. */
export interface CpioOptions {
  /** Modification time of every entry, in seconds since the epoch; default 0 (reproducible). */
  readonly mtime?: number;
  /**
   * Pad the archive with zeros to a multiple of this many bytes after the trailer; default 512
   * (what GNU cpio writes). 0 writes no padding beyond the format's own 4-byte alignment.
   */
  readonly blockSize?: number;
}

const MAGIC = '070701';
const HEADER_SIZE = 110;
const TRAILER_NAME = 'TRAILER!!!';

/** File type bits of `st_mode` (`<sys/stat.h>`). */
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFMT = 0o170000;

const encoder = new TextEncoder();
const MAX_U32 = 0xffff_ffff;

interface HeaderFields {
  ino: number;
  mode: number;
  nlink: number;
  mtime: number;
  fileSize: number;
  rdevMajor: number;
  rdevMinor: number;
  nameSize: number;
}

function hex8(value: number): string {
  return value.toString(16).toUpperCase().padStart(8, '0');
}

function padLength(length: number): number {
  return (4 - (length % 4)) % 4;
}

function checkU32(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > MAX_U32) {
    throw new GuestError(
      'INVALID_OPTIONS',
      `cpio ${what} must be an integer in 0..2^32-1, got ${value}`,
    );
  }
  return value;
}

function archivePath(path: string): string {
  const stripped = path.replace(/^\/+/, '').replace(/\/+$/, '');
  if (stripped === '' || stripped.includes('\0')) {
    throw new GuestError(
      'INVALID_OPTIONS',
      `cpio entry path ${JSON.stringify(path)} is empty or contains NUL`,
    );
  }
  if (stripped.split('/').some((part) => part === '' || part === '.' || part === '..')) {
    throw new GuestError(
      'INVALID_OPTIONS',
      `cpio entry path ${JSON.stringify(path)} has an empty, "." or ".." component`,
    );
  }
  return stripped;
}

function permissionBits(mode: number | undefined, fallback: number, path: string): number {
  const bits = mode ?? fallback;
  if (!Number.isInteger(bits) || bits < 0 || bits > 0o7777) {
    throw new GuestError(
      'INVALID_OPTIONS',
      `cpio entry ${path}: mode must hold permission bits only (0..0o7777), got 0o${bits.toString(8)}`,
    );
  }
  return bits;
}

function header(fields: HeaderFields, name: string): Uint8Array {
  const text =
    MAGIC +
    hex8(fields.ino) +
    hex8(fields.mode) +
    hex8(0) + // uid
    hex8(0) + // gid
    hex8(fields.nlink) +
    hex8(fields.mtime) +
    hex8(fields.fileSize) +
    hex8(0) + // devmajor of the archived filesystem: meaningless in a generated archive
    hex8(0) + // devminor
    hex8(fields.rdevMajor) +
    hex8(fields.rdevMinor) +
    hex8(fields.nameSize) +
    hex8(0); // check: only used by the "070702" crc format
  const nameBytes = encoder.encode(name);
  const unpadded = HEADER_SIZE + nameBytes.length + 1;
  const out = new Uint8Array(unpadded + padLength(unpadded));
  out.set(encoder.encode(text), 0);
  out.set(nameBytes, HEADER_SIZE);
  return out;
}

/**
 * Incremental newc writer: feed entries one at a time and collect the chunks it returns, then the
 * chunks of {@link CpioWriter.finish}. Keeps no file data, so archives of any size can be streamed.
 */
export class CpioWriter {
  readonly #mtime: number;
  readonly #blockSize: number;
  readonly #paths = new Set<string>();
  #nextInode = 0;
  #written = 0;
  #finished = false;

  constructor(options: CpioOptions = {}) {
    this.#mtime = checkU32(options.mtime ?? 0, 'mtime');
    this.#blockSize = checkU32(options.blockSize ?? 512, 'blockSize');
  }

  /** Bytes returned so far. */
  get bytesWritten(): number {
    return this.#written;
  }

  /** Encodes one entry. Throws a `GuestError` (`INVALID_OPTIONS`) for a bad or repeated path. */
  add(entry: CpioEntry): Uint8Array[] {
    if (this.#finished) throw new GuestError('INVALID_OPTIONS', 'cpio archive already finished');
    const name = archivePath(entry.path);
    if (this.#paths.has(name)) {
      throw new GuestError('INVALID_OPTIONS', `cpio entry ${name} added twice`);
    }
    let mode: number;
    let data: Uint8Array = new Uint8Array(0);
    let nlink = 1;
    let rdevMajor = 0;
    let rdevMinor = 0;
    switch (entry.type) {
      case 'file':
        mode = S_IFREG | permissionBits(entry.mode, 0o644, name);
        data = typeof entry.data === 'string' ? encoder.encode(entry.data) : entry.data;
        break;
      case 'directory':
        mode = S_IFDIR | permissionBits(entry.mode, 0o755, name);
        // "." and the entry in the parent; subdirectories' ".." are not counted (the kernel ignores it).
        nlink = 2;
        break;
      case 'symlink':
        if (entry.target === '' || entry.target.includes('\0')) {
          throw new GuestError(
            'INVALID_OPTIONS',
            `cpio symlink ${name} has an empty or NUL target`,
          );
        }
        mode = S_IFLNK | 0o777;
        data = encoder.encode(entry.target);
        break;
      case 'char-device':
      case 'block-device':
        mode =
          (entry.type === 'char-device' ? S_IFCHR : S_IFBLK) |
          permissionBits(entry.mode, 0o600, name);
        rdevMajor = checkU32(entry.major, `${name} major`);
        rdevMinor = checkU32(entry.minor, `${name} minor`);
        break;
      default: {
        const unknown: never = entry;
        throw new GuestError(
          'INVALID_OPTIONS',
          `unknown cpio entry type ${JSON.stringify(unknown)}`,
        );
      }
    }
    checkU32(data.length, `${name} size`);
    this.#paths.add(name);
    const head = header(
      {
        ino: this.#nextInode++,
        mode,
        nlink,
        mtime: this.#mtime,
        fileSize: data.length,
        rdevMajor,
        rdevMinor,
        nameSize: encoder.encode(name).length + 1,
      },
      name,
    );
    const chunks = [head];
    if (data.length > 0) {
      chunks.push(data);
      const pad = padLength(data.length);
      if (pad > 0) chunks.push(new Uint8Array(pad));
    }
    return this.#count(chunks);
  }

  /** Encodes the `TRAILER!!!` entry and the block padding. No entries can be added afterwards. */
  finish(): Uint8Array[] {
    if (this.#finished) throw new GuestError('INVALID_OPTIONS', 'cpio archive already finished');
    this.#finished = true;
    const trailer = header(
      {
        ino: 0,
        mode: 0,
        nlink: 1,
        mtime: 0,
        fileSize: 0,
        rdevMajor: 0,
        rdevMinor: 0,
        nameSize: TRAILER_NAME.length + 1,
      },
      TRAILER_NAME,
    );
    const chunks = [trailer];
    if (this.#blockSize > 0) {
      const total = this.#written + trailer.length;
      const pad = (this.#blockSize - (total % this.#blockSize)) % this.#blockSize;
      if (pad > 0) chunks.push(new Uint8Array(pad));
    }
    return this.#count(chunks);
  }

  #count(chunks: Uint8Array[]): Uint8Array[] {
    for (const chunk of chunks) this.#written += chunk.length;
    return chunks;
  }
}

/** Yields the chunks of a complete archive (entries, trailer, padding), for streaming. */
export function* cpioChunks(
  entries: Iterable<CpioEntry>,
  options: CpioOptions = {},
): Generator<Uint8Array, void, undefined> {
  const writer = new CpioWriter(options);
  for (const entry of entries) yield* writer.add(entry);
  yield* writer.finish();
}

/**
 * Encodes a complete archive into one buffer.
 *
 * @example
 * ```ts
 * const bytes = encodeCpio([
 *   { type: 'directory', path: 'dev' },
 *   { type: 'char-device', path: 'dev/console', major: 5, minor: 1 },
 *   { type: 'file', path: 'init', data: '#!/bin/sh\n', mode: 0o755 },
 * ]);
 * ```
 */
export function encodeCpio(entries: Iterable<CpioEntry>, options: CpioOptions = {}): Buffer {
  return Buffer.concat([...cpioChunks(entries, options)]);
}

/** Encodes a complete archive and gzips it (node:zlib; no timestamp in the gzip header). */
export function gzipCpio(
  entries: Iterable<CpioEntry>,
  options: CpioOptions & { readonly level?: number } = {},
): Promise<Buffer> {
  const raw = encodeCpio(entries, options);
  return new Promise((resolve, reject) => {
    gzip(raw, { level: options.level ?? 9 }, (error, result) =>
      error ? reject(error) : resolve(result),
    );
  });
}

/** Streams an archive into a file, gzipped unless `gzip: false`. */
export async function writeCpioFile(
  path: string,
  entries: Iterable<CpioEntry>,
  options: CpioOptions & { readonly gzip?: boolean; readonly level?: number } = {},
): Promise<void> {
  const source = Readable.from(cpioChunks(entries, options), { objectMode: false });
  if (options.gzip === false) {
    await pipeline(source, createWriteStream(path));
  } else {
    await pipeline(source, createGzip({ level: options.level ?? 9 }), createWriteStream(path));
  }
}

/** One member as read back by {@link readCpio}. */
export interface CpioRecord {
  readonly name: string;
  readonly ino: number;
  /** Full `st_mode`: file type and permission bits. */
  readonly mode: number;
  readonly type: CpioEntry['type'] | 'other';
  readonly uid: number;
  readonly gid: number;
  readonly nlink: number;
  readonly mtime: number;
  readonly rdevMajor: number;
  readonly rdevMinor: number;
  readonly data: Uint8Array;
}

function typeOf(mode: number): CpioRecord['type'] {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return 'file';
    case S_IFDIR:
      return 'directory';
    case S_IFLNK:
      return 'symlink';
    case S_IFCHR:
      return 'char-device';
    case S_IFBLK:
      return 'block-device';
    default:
      return 'other';
  }
}

/**
 * Parses an uncompressed newc archive up to its trailer, checking magic, field syntax and bounds.
 * Meant for tests and inspection of generated initramfs images; throws `GuestError`
 * (`INVALID_OPTIONS`) on malformed input.
 */
export function readCpio(bytes: Uint8Array): CpioRecord[] {
  const decoder = new TextDecoder();
  const records: CpioRecord[] = [];
  let offset = 0;
  const fail = (why: string): never => {
    throw new GuestError('INVALID_OPTIONS', `malformed cpio at byte ${offset}: ${why}`);
  };
  for (;;) {
    if (offset + HEADER_SIZE > bytes.length) fail('truncated header (no TRAILER!!!)');
    const head = decoder.decode(bytes.subarray(offset, offset + HEADER_SIZE));
    if (!head.startsWith(MAGIC)) fail(`bad magic ${JSON.stringify(head.slice(0, 6))}`);
    const fields: number[] = [];
    for (let i = 0; i < 13; i++) {
      const field = head.slice(6 + i * 8, 14 + i * 8);
      if (!/^[0-9A-Fa-f]{8}$/.test(field)) fail(`field ${i} is not hex: ${JSON.stringify(field)}`);
      fields.push(Number.parseInt(field, 16));
    }
    const [ino, mode, uid, gid, nlink, mtime, fileSize, , , rdevMajor, rdevMinor, nameSize] =
      fields as [
        number,
        number,
        number,
        number,
        number,
        number,
        number,
        number,
        number,
        number,
        number,
        number,
      ];
    const nameStart = offset + HEADER_SIZE;
    if (nameSize < 1 || nameStart + nameSize > bytes.length) fail('name runs past the end');
    if (bytes[nameStart + nameSize - 1] !== 0) fail('name is not NUL-terminated');
    const name = decoder.decode(bytes.subarray(nameStart, nameStart + nameSize - 1));
    const dataStart = nameStart + nameSize + padLength(HEADER_SIZE + nameSize);
    if (dataStart + fileSize > bytes.length) fail(`data of ${name} runs past the end`);
    if (name === TRAILER_NAME) return records;
    records.push({
      name,
      ino,
      mode,
      type: typeOf(mode),
      uid,
      gid,
      nlink,
      mtime,
      rdevMajor,
      rdevMinor,
      data: bytes.slice(dataStart, dataStart + fileSize),
    });
    offset = dataStart + fileSize + padLength(fileSize);
  }
}
