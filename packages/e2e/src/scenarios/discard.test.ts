import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createRawImage, md5 } from '../disk.js';
import {
  checkDiscardRun,
  createDiscardImage,
  DISCARD_LAYOUT,
  discardKeptRegions,
} from './discard.js';

describe('checkDiscardRun', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const guest = (kept: (name: string) => string) =>
    [
      'E2E discard-limits 4294966784 512',
      'E2E discard ok',
      ...discardKeptRegions().map((region) => `E2E kept-${region.name} ${kept(region.name)}`),
    ].join('\r\n');
  const keptMd5 = (name: string) =>
    md5(discardKeptRegions().find((region) => region.name === name)!.data);

  it('accepts a punched range with the rest intact, and names what is wrong otherwise', () => {
    dir = mkdtempSync(join(tmpdir(), 'virtkit-discard-'));
    const before = createDiscardImage(join(dir, 'full.img'));
    expect(before).toBeGreaterThanOrEqual(DISCARD_LAYOUT.size / 512);
    // What a device that punched the range leaves: the kept data, a hole in the middle.
    const punched = join(dir, 'punched.img');
    createRawImage(punched, DISCARD_LAYOUT.size, discardKeptRegions());
    expect(checkDiscardRun(guest(keptMd5), punched, before)).toEqual([]);

    // A device that ignored the discard, and a guest that saw other data before the range.
    expect(
      checkDiscardRun(
        guest((name) => (name === 'before' ? 'f'.repeat(32) : keptMd5(name))),
        join(dir, 'full.img'),
        before,
      ),
    ).toEqual([
      `guest: the data before the range reads ${'f'.repeat(32)}`,
      'image: the discarded range is not zeros',
      `image: 0 512-byte units freed, the discarded range has ${DISCARD_LAYOUT.discardBytes / 512}`,
    ]);
    expect(checkDiscardRun('', punched, before)).toContain(
      'the guest sees no discard support (discard_max_bytes not reported)',
    );
  });
});
