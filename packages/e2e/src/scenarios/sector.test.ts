import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { md5, patternBytes } from '../disk.js';
import { checkSectorRun, SECTOR_LAYOUT } from './sector.js';

describe('checkSectorRun', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('accepts 4 KiB sectors with both writes in the image, and names what is wrong otherwise', () => {
    const L = SECTOR_LAYOUT;
    dir = mkdtempSync(join(tmpdir(), 'virtkit-sector-'));
    const image = join(dir, 'disk.img');
    const direct = patternBytes(7, L.writeBytes);
    const buffered = patternBytes(8, L.writeBytes);
    const content = Buffer.alloc(L.size);
    direct.copy(content, L.directOffset);
    buffered.copy(content, L.bufferedOffset);
    writeFileSync(image, content);
    const output = (sizes: string) =>
      [
        `E2E sizes ${sizes}`,
        `E2E direct ${md5(direct)} ${md5(direct)}`,
        `E2E buffered ${md5(buffered)} ${md5(buffered)}`,
      ].join('\r\n');
    expect(checkSectorRun(output(`4096 4096 ${L.size / 512}`), image)).toEqual([]);
    expect(checkSectorRun(output(`512 512 ${L.size / 512}`), image)).toEqual([
      `guest: sizes '512 512 ${L.size / 512}', want '4096 4096 ${L.size / 512}'`,
    ]);
    writeFileSync(image, Buffer.alloc(L.size));
    const zeros = md5(Buffer.alloc(L.writeBytes));
    expect(checkSectorRun(output(`4096 4096 ${L.size / 512}`), image)).toEqual([
      `image: the direct write has md5 ${zeros}, the guest wrote ${md5(direct)}`,
      `image: the buffered write has md5 ${zeros}, the guest wrote ${md5(buffered)}`,
    ]);
  });
});
