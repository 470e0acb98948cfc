import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  type CpioEntry,
  CpioWriter,
  cpioChunks,
  encodeCpio,
  gzipCpio,
  readCpio,
  writeCpioFile,
} from './cpio.js';

/**
 * Made with GNU cpio 2.13 from a tree with these entries (all mtime 0, owner root):
 *   printf 'bin\nbin/hello\nbin/sh\ndev\ndev/console\ndev/null\ninit\n' |
 *     cpio -o -H newc --reproducible --owner 0:0
 */
const GNU_CPIO_REFERENCE = Buffer.from(
  'MDcwNzAxMDAwMDAwMDAwMDAwNDFFRDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMjAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw' +
    'MDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA0MDAwMDAwMDBiaW4AAAAwNzA3MDEwMDAwMDAwMTAwMDA4MUVEMDAwMDAwMDAwMDAw' +
    'MDAwMDAwMDAwMDAxMDAwMDAwMDAwMDAwMDAwNjAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMEEwMDAwMDAw' +
    'MGJpbi9oZWxsbwBoZWxsbwoAADA3MDcwMTAwMDAwMDAyMDAwMEExRkYwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDEwMDAwMDAwMDAw' +
    'MDAwMDA1MDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwNzAwMDAwMDAwYmluL3NoAAAAAGhlbGxvAAAAMDcw' +
    'NzAxMDAwMDAwMDMwMDAwNDFFRDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMjAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw' +
    'MDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA0MDAwMDAwMDBkZXYAAAAwNzA3MDEwMDAwMDAwNDAwMDAyMTgwMDAwMDAwMDAwMDAwMDAw' +
    'MDAwMDAwMDAxMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwNTAwMDAwMDAxMDAwMDAwMEMwMDAwMDAwMGRl' +
    'di9jb25zb2xlAAAAMDcwNzAxMDAwMDAwMDUwMDAwMjFCNjAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMTAwMDAwMDAwMDAwMDAwMDAw' +
    'MDAwMDAwMDAwMDAwMDAwMDAwMDAwMDEwMDAwMDAwMzAwMDAwMDA5MDAwMDAwMDBkZXYvbnVsbAAAMDcwNzAxMDAwMDAwMDYwMDAw' +
    'ODFFRDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMTAwMDAwMDAwMDAwMDAwMTIwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw' +
    'MDAwMDAwMDA1MDAwMDAwMDBpbml0AAAjIS9iaW4vc2gKZWNobyBoaQoAADA3MDcwMTAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw' +
    'MDAwMDAwMDAwMDAwMDEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwQjAwMDAw' +
    'MDAwVFJBSUxFUiEhIQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==',
  'base64',
);
const GNU_CPIO_SHA256 = 'a0bb1d54e489e140fa411dc6cfce562a17a49533cdb6398e35aacc3d4ae5b9ce';

const referenceEntries: CpioEntry[] = [
  { type: 'directory', path: 'bin' },
  { type: 'file', path: 'bin/hello', data: 'hello\n', mode: 0o755 },
  { type: 'symlink', path: 'bin/sh', target: 'hello' },
  { type: 'directory', path: '/dev' },
  { type: 'char-device', path: '/dev/console', major: 5, minor: 1, mode: 0o600 },
  { type: 'char-device', path: '/dev/null', major: 1, minor: 3, mode: 0o666 },
  { type: 'file', path: '/init', data: '#!/bin/sh\necho hi\n', mode: 0o755 },
];

const hasCpio = spawnSync('cpio', ['--version']).status === 0;

describe('cpio newc writer', () => {
  it('matches the GNU cpio reference byte for byte', () => {
    expect(createHash('sha256').update(GNU_CPIO_REFERENCE).digest('hex')).toBe(GNU_CPIO_SHA256);
    const ours = encodeCpio(referenceEntries);
    expect(ours.length).toBe(1024);
    expect(ours.equals(GNU_CPIO_REFERENCE)).toBe(true);
  });

  it('streams the same bytes it encodes in one go', () => {
    const streamed = Buffer.concat([...cpioChunks(referenceEntries)]);
    expect(streamed.equals(GNU_CPIO_REFERENCE)).toBe(true);
    const writer = new CpioWriter();
    let total = 0;
    for (const entry of referenceEntries)
      for (const chunk of writer.add(entry)) total += chunk.length;
    for (const chunk of writer.finish()) total += chunk.length;
    expect(total).toBe(1024);
    expect(writer.bytesWritten).toBe(1024);
  });

  it('reads back what it wrote', () => {
    const records = readCpio(encodeCpio(referenceEntries, { mtime: 1_700_000_000 }));
    expect(records.map((r) => [r.name, r.type, (r.mode & 0o7777).toString(8)])).toEqual([
      ['bin', 'directory', '755'],
      ['bin/hello', 'file', '755'],
      ['bin/sh', 'symlink', '777'],
      ['dev', 'directory', '755'],
      ['dev/console', 'char-device', '600'],
      ['dev/null', 'char-device', '666'],
      ['init', 'file', '755'],
    ]);
    const byName = new Map(records.map((r) => [r.name, r]));
    expect(Buffer.from(byName.get('bin/sh')!.data).toString()).toBe('hello');
    expect(byName.get('dev/console')).toMatchObject({ rdevMajor: 5, rdevMinor: 1, uid: 0, gid: 0 });
    expect(new Set(records.map((r) => r.mtime))).toEqual(new Set([1_700_000_000]));
    expect(new Set(records.map((r) => r.ino)).size).toBe(records.length);
  });

  it('aligns every header and data block to 4 bytes, for all name and data lengths', () => {
    const entries: CpioEntry[] = [];
    for (let n = 1; n <= 9; n++) {
      entries.push({ type: 'file', path: 'f'.repeat(n), data: new Uint8Array(n).fill(n) });
    }
    const bytes = encodeCpio(entries, { blockSize: 0 });
    expect(bytes.length % 4).toBe(0);
    const records = readCpio(bytes);
    expect(records.map((r) => r.data.length)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(records.every((r) => r.data.every((b) => b === r.data.length))).toBe(true);
    // Every "070701" sits on a 4-byte boundary.
    const text = bytes.toString('latin1');
    for (let at = text.indexOf('070701'); at >= 0; at = text.indexOf('070701', at + 1)) {
      expect(at % 4).toBe(0);
    }
  });

  it('gzips to something that gunzips to the plain archive', async () => {
    const gz = await gzipCpio(referenceEntries);
    expect(gz[0]).toBe(0x1f);
    expect(gz[1]).toBe(0x8b);
    expect(gunzipSync(gz).equals(GNU_CPIO_REFERENCE)).toBe(true);
    // Reproducible: same input, same bytes.
    expect((await gzipCpio(referenceEntries)).equals(gz)).toBe(true);
  });

  it('writes gzipped and plain files through a stream', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtkit-cpio-'));
    try {
      await writeCpioFile(join(dir, 'a.cpio.gz'), referenceEntries);
      await writeCpioFile(join(dir, 'a.cpio'), referenceEntries, { gzip: false });
      expect(gunzipSync(readFileSync(join(dir, 'a.cpio.gz'))).equals(GNU_CPIO_REFERENCE)).toBe(
        true,
      );
      expect(readFileSync(join(dir, 'a.cpio')).equals(GNU_CPIO_REFERENCE)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.skipIf(!hasCpio)('is listed by the cpio tool (when installed)', () => {
    const listing = execFileSync('cpio', ['-t', '--quiet'], {
      input: encodeCpio([
        ...referenceEntries,
        { type: 'block-device', path: 'vda', major: 254, minor: 0 },
      ]),
    }).toString();
    expect(listing.trim().split('\n')).toEqual([
      'bin',
      'bin/hello',
      'bin/sh',
      'dev',
      'dev/console',
      'dev/null',
      'init',
      'vda',
    ]);
  });

  it('refuses bad paths, modes, duplicates and use after finish', () => {
    expect(() => encodeCpio([{ type: 'directory', path: '/' }])).toThrow(/empty/);
    expect(() => encodeCpio([{ type: 'directory', path: 'a/../b' }])).toThrow(/"\.\."/);
    expect(() => encodeCpio([{ type: 'file', path: 'x', data: '', mode: 0o100644 }])).toThrow(
      /permission bits/,
    );
    expect(() =>
      encodeCpio([
        { type: 'directory', path: 'x' },
        { type: 'directory', path: '/x/' },
      ]),
    ).toThrow(/added twice/);
    expect(() => encodeCpio([{ type: 'char-device', path: 'c', major: -1, minor: 0 }])).toThrow(
      /major/,
    );
    const writer = new CpioWriter();
    writer.finish();
    expect(() => writer.add({ type: 'directory', path: 'late' })).toThrow(/finished/);
  });

  it('reader rejects corrupt archives', () => {
    const good = encodeCpio(referenceEntries);
    expect(() => readCpio(good.subarray(0, 200))).toThrow(/malformed cpio/);
    const badMagic = Buffer.from(good);
    badMagic.write('070707', 0, 'latin1');
    expect(() => readCpio(badMagic)).toThrow(/bad magic/);
  });
});
