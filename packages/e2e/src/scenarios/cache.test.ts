import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { md5, patternBytes } from '../disk.js';
import { CACHE_LAYOUT, checkCacheModeRun } from './cache.js';

describe('checkCacheModeRun', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('accepts a round trip through writethrough with the data in the image, and names failures', () => {
    dir = mkdtempSync(join(tmpdir(), 'virtkit-cache-'));
    const image = join(dir, 'disk.img');
    const data = patternBytes(5, CACHE_LAYOUT.writeBytes);
    const content = Buffer.alloc(CACHE_LAYOUT.size);
    data.copy(content, CACHE_LAYOUT.writeOffset);
    writeFileSync(image, content);
    const output = (through: string) =>
      [
        'E2E mode-initial write back / write back',
        `E2E mode-through ${through}`,
        'E2E write ok',
        `E2E wrote ${md5(data)}`,
        'E2E mode-back write back / write back',
      ].join('\r\n');
    expect(checkCacheModeRun(output('write through / write through'), image, 'write back')).toEqual(
      [],
    );
    expect(checkCacheModeRun(output('write back / write back'), image, 'write through')).toEqual([
      "guest: mode-initial is 'write back / write back', want 'write through / write through'",
      "guest: mode-through is 'write back / write back', want 'write through / write through'",
    ]);
    writeFileSync(image, Buffer.alloc(CACHE_LAYOUT.size));
    expect(checkCacheModeRun(output('write through / write through'), image)).toEqual([
      `image: the write has md5 ${md5(Buffer.alloc(CACHE_LAYOUT.writeBytes))}, the guest wrote ${md5(data)}`,
    ]);
  });
});
