import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createRawImage, md5, patternBytes, readRange } from './disk.js';

describe('disk images', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  const scratch = () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtkit-e2e-disk-'));
    dirs.push(dir);
    return dir;
  };

  it('makes the same pattern for a seed every time, and different ones for different seeds', () => {
    expect(patternBytes(7, 4099)).toEqual(patternBytes(7, 4099));
    expect(md5(patternBytes(7, 4096))).not.toBe(md5(patternBytes(8, 4096)));
    // The tail of a length that is not a multiple of 4 is filled too.
    expect(
      patternBytes(7, 4099)
        .subarray(4096)
        .every((byte) => byte === 0),
    ).toBe(false);
  });

  it('writes regions at their offsets in a sparse image of the given size', () => {
    const path = join(scratch(), 'disk.img');
    const data = patternBytes(1, 8192);
    createRawImage(path, 1 << 20, [{ name: 'a', offset: 12288, data }]);
    expect(statSync(path).size).toBe(1 << 20);
    expect(readRange(path, 12288, 8192)).toEqual(data);
    expect(readRange(path, 0, 4096).every((byte) => byte === 0)).toBe(true);
  });

  it('refuses a region past the end of the image', () => {
    const path = join(scratch(), 'disk.img');
    expect(() =>
      createRawImage(path, 4096, [{ name: 'late', offset: 4096, data: Buffer.alloc(1) }]),
    ).toThrow(/past the end/);
  });
});
