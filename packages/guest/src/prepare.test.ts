import { mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type GuestProgress, prepareGuest, readPreparedGuest } from './prepare.js';
import { makeFakeGuestCache } from './test-fixtures.js';

const temporaryDirs: string[] = [];
const savedPath = process.env.PATH;
afterEach(() => {
  process.env.PATH = savedPath;
  for (const dir of temporaryDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('prepareGuest', () => {
  it('runs nothing when the cache is complete (no apt-get on PATH needed)', async () => {
    const dir = makeFakeGuestCache('riscv64');
    temporaryDirs.push(dir);
    process.env.PATH = '';
    const progress: GuestProgress[] = [];
    const guest = await prepareGuest({
      arch: 'riscv64',
      dir,
      modules: ['virtio-blk'],
      onProgress: (p) => progress.push(p),
    });
    expect(guest.fromCache).toBe(true);
    expect(guest.kernel).toBe(join(dir, 'kernel/vmlinuz-6.12.0+deb13-riscv64'));
    expect(guest.modules.map((m) => m.name)).toEqual(['virtio_ring', 'virtio', 'virtio_blk']);
    expect(guest.builtinModules).toEqual(['virtio_pci']);
    expect(progress).toEqual([{ step: 'ready', detail: expect.stringContaining('cached') }]);
    await expect(readPreparedGuest({ arch: 'riscv64', dir })).resolves.toMatchObject({
      kernelRelease: '6.12.0+deb13-riscv64',
    });
  });

  it('prepares again (and needs apt) when a module is missing or another is requested', async () => {
    const dir = makeFakeGuestCache('x86_64');
    temporaryDirs.push(dir);
    process.env.PATH = '';
    await expect(
      prepareGuest({ dir, modules: ['virtio_blk', 'virtio_gpu'] }),
    ).rejects.toMatchObject({
      code: 'TOOL_MISSING',
      message: expect.stringMatching(/apt-get .*dpkg-deb/),
    });
    unlinkSync(join(dir, 'modules/6.1.0-99-cloud-amd64/virtio.ko'));
    await expect(prepareGuest({ dir, modules: ['virtio_blk'] })).rejects.toMatchObject({
      code: 'TOOL_MISSING',
    });
    await expect(readPreparedGuest({ dir })).rejects.toMatchObject({ code: 'GUEST_NOT_PREPARED' });
  });

  it('does not take a cache of the other architecture for its own', async () => {
    const dir = makeFakeGuestCache('x86_64');
    temporaryDirs.push(dir);
    await expect(readPreparedGuest({ arch: 'riscv64', dir })).rejects.toMatchObject({
      code: 'GUEST_NOT_PREPARED',
    });
  });

  it('refuses unknown architectures and a missing keyring', async () => {
    await expect(prepareGuest({ arch: 'sparc' as 'x86_64' })).rejects.toMatchObject({
      code: 'INVALID_OPTIONS',
    });
    const dir = mkdtempSync(join(tmpdir(), 'virtkit-keyring-'));
    temporaryDirs.push(dir);
    await expect(prepareGuest({ dir, keyring: join(dir, 'none.gpg') })).rejects.toMatchObject({
      code: expect.stringMatching(/KEYRING_MISSING|TOOL_MISSING/),
    });
  });
});
