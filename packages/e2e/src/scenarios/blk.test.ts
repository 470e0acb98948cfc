import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { md5, patternBytes } from '../disk.js';
import {
  BLK_LAYOUT,
  blkScript,
  checkBlkRun,
  checkReadOnlyRun,
  createBlkImage,
  imageDigest,
} from './blk.js';

/** What a passing guest run prints, with `written` as the guest's data. */
function passingOutput(written: Buffer): string {
  const known = BLK_LAYOUT.regions.map((r) => `E2E verify-${r.name} ok`);
  const writes = ['E2E verify-buffered ok', 'E2E verify-direct ok'];
  return [
    `E2E device virtio0 features ${'0'.repeat(32)}1${'0'.repeat(31)} size 131072 ro 0 mq 1`,
    'E2E phase 1',
    ...known,
    ...writes,
    `E2E wrote ${md5(written)}`,
    'E2E rebooting',
    'E2E phase 2',
    ...known,
    ...writes,
    'E2E done 0',
  ].join('\r\n');
}

describe('block scenario checks', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });
  const imageWith = (written: Buffer | undefined): string => {
    const dir = mkdtempSync(join(tmpdir(), 'virtkit-e2e-blkcheck-'));
    dirs.push(dir);
    const path = join(dir, 'disk.img');
    createBlkImage(path);
    if (written) {
      const image = readFileSync(path);
      written.copy(image, BLK_LAYOUT.bufferedOffset);
      written.copy(image, BLK_LAYOUT.directOffset);
      image.write(`E2E-STATE1 ${md5(written)}\n`, BLK_LAYOUT.stateOffset, 'latin1');
      writeFileSync(path, image);
    }
    return path;
  };

  it('passes a run whose writes are in the image', () => {
    const written = patternBytes(9, BLK_LAYOUT.writeBytes);
    expect(checkBlkRun(passingOutput(written), imageWith(written))).toEqual([]);
  });

  it('finds a write the image does not hold, a kernel I/O error and a missing reboot', () => {
    const written = patternBytes(9, BLK_LAYOUT.writeBytes);
    const output = passingOutput(written)
      .replace('E2E rebooting', '[ 1.0] blk_update_request: I/O error, dev vda')
      .replace('E2E verify-tail ok', 'E2E verify-tail BAD got 0 want 1');
    const problems = checkBlkRun(output, imageWith(undefined));
    expect(problems).toContain('phase 1 did not reboot');
    expect(problems).toContain('guest: verify-tail BAD got 0 want 1');
    expect(problems.some((p) => p.startsWith('kernel: '))).toBe(true);
    expect(problems.some((p) => p.startsWith('image: buffered write has md5'))).toBe(true);
  });

  it('checks the negotiated ring layout and queue count when asked', () => {
    const written = patternBytes(9, BLK_LAYOUT.writeBytes);
    const problems = checkBlkRun(passingOutput(written), imageWith(written), {
      packed: true,
      queues: 2,
    });
    expect(problems).toContain('VIRTIO_F_RING_PACKED negotiated: false');
    expect(problems).toContain('guest uses 1 hardware queues, not 2');
  });

  it('read-only: an unchanged image and refused writes pass; an accepted write does not', () => {
    const image = imageWith(undefined);
    const before = imageDigest(image);
    const ok = [
      'E2E device virtio0 features 0 size 131072 ro 1 mq 1',
      "E2E direct-write refused dd: can't open '/dev/vda': Operation not permitted",
      "E2E buffered-write refused dd: can't open '/dev/vda': Operation not permitted",
      'E2E done 0',
    ].join('\n');
    expect(checkReadOnlyRun(ok, image, before)).toEqual([]);
    expect(
      checkReadOnlyRun(
        ok.replace(/E2E direct-write refused.*/, 'E2E direct-write accepted'),
        image,
        before,
      ),
    ).toContain('guest: direct-write accepted');
  });

  it('embeds the md5 of every known region in the guest script', () => {
    const script = blkScript({ queues: 2 });
    for (const region of BLK_LAYOUT.regions) expect(script).toContain(md5(region.data));
    expect(script).toContain('taskset $mask');
  });
});
