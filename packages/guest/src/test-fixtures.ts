/**
 * Test fixtures (not exported from the package): a fake prepared guest cache, so that the
 * initramfs, prepare and CLI code paths that start from a complete cache run without downloads.
 */

import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type GuestArch, type GuestManifest, MANIFEST_FORMAT, MANIFEST_NAME } from './cache.js';
import { DEFAULT_GUEST_MODULES } from './modules.js';

/** Contents of the fake busybox (any bytes do; nothing executes them). */
export const FAKE_BUSYBOX = Buffer.from('\x7fELF fake busybox');

/** Writes a complete-looking cache for `arch` into a new temporary directory and returns it. */
export function makeFakeGuestCache(arch: GuestArch = 'x86_64', root?: string): string {
  const dir = root ?? mkdtempSync(join(tmpdir(), 'virtkit-guest-cache-'));
  const release = arch === 'x86_64' ? '6.1.0-99-cloud-amd64' : '6.12.0+deb13-riscv64';
  mkdirSync(join(dir, 'kernel'), { recursive: true });
  mkdirSync(join(dir, 'busybox'), { recursive: true });
  mkdirSync(join(dir, 'modules', release), { recursive: true });
  writeFileSync(join(dir, 'kernel', `vmlinuz-${release}`), 'fake kernel');
  writeFileSync(join(dir, 'busybox', 'busybox'), FAKE_BUSYBOX);
  const load = [
    { name: 'virtio_ring', deps: [] },
    { name: 'virtio', deps: ['virtio_ring'] },
    { name: 'virtio_blk', deps: ['virtio', 'virtio_ring'] },
  ].map((module) => {
    const file = `modules/${release}/${module.name}.ko`;
    writeFileSync(join(dir, file), `fake module ${module.name}`);
    return { ...module, file };
  });
  writeFileSync(
    join(dir, 'modules', release, 'modules.dep'),
    'virtio_ring.ko:\nvirtio.ko: virtio_ring.ko\nvirtio_blk.ko: virtio.ko virtio_ring.ko\n',
  );
  const manifest: GuestManifest = {
    format: MANIFEST_FORMAT,
    arch,
    suite: arch === 'x86_64' ? 'bookworm' : 'trixie',
    debianArch: arch === 'x86_64' ? 'amd64' : 'riscv64',
    kernel: {
      package: `linux-image-${release}`,
      version: '1.0-1',
      release,
      file: `kernel/vmlinuz-${release}`,
    },
    busybox: { package: 'busybox-static', version: '1:1.35.0-4', file: 'busybox/busybox' },
    modules: {
      requested: [...DEFAULT_GUEST_MODULES],
      builtin: ['virtio_pci'],
      load,
      source: 'modinfo',
      dep: `modules/${release}/modules.dep`,
    },
  };
  writeFileSync(join(dir, MANIFEST_NAME), JSON.stringify(manifest));
  return dir;
}
