import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_GUEST_MODULES,
  formatModulesDep,
  type ModuleInfo,
  modinfoDepends,
  moduleNameOf,
  parseModuleList,
  parseModulesDep,
  readModinfo,
  resolveLoadOrder,
  resolveModulesIn,
} from './modules.js';

/** A modules.dep as depmod writes it for Debian bookworm's 6.1 cloud kernel (virtio part). */
const BOOKWORM_MODULES_DEP = `
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
`;

/** Kernel link order (modules.order), which breaks ties between independent dependencies. */
const LINK_ORDER = parseModuleList(`
kernel/drivers/virtio/virtio.ko
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_mmio.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko
kernel/drivers/virtio/virtio_pci.ko
kernel/drivers/char/hw_random/virtio-rng.ko
kernel/drivers/char/virtio_console.ko
kernel/drivers/block/virtio_blk.ko
kernel/drivers/net/net_failover.ko
kernel/drivers/net/virtio_net.ko
kernel/net/core/failover.ko
`);

function names(modules: readonly ModuleInfo[]): string[] {
  return modules.map((module) => module.name);
}

function assertTopological(modules: readonly ModuleInfo[]): void {
  const seen = new Set<string>();
  for (const module of modules) {
    for (const dep of module.deps) expect(seen, `${dep} before ${module.name}`).toContain(dep);
    seen.add(module.name);
  }
}

/** Builds a minimal little- or big-endian ELF64 relocatable with a .modinfo section. */
function makeModuleElf(modinfo: string, littleEndian = true): Uint8Array {
  const shstrtab = Buffer.from('\0.shstrtab\0.modinfo\0');
  const info = Buffer.from(modinfo);
  const dataStart = 64;
  const shoff = dataStart + shstrtab.length + info.length;
  const out = Buffer.alloc(shoff + 3 * 64);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  out.set([0x7f, 0x45, 0x4c, 0x46, 2, littleEndian ? 1 : 2, 1], 0);
  view.setUint16(0x10, 1, littleEndian); // ET_REL
  view.setBigUint64(0x28, BigInt(shoff), littleEndian);
  view.setUint16(0x3a, 64, littleEndian);
  view.setUint16(0x3c, 3, littleEndian);
  view.setUint16(0x3e, 1, littleEndian);
  out.set(shstrtab, dataStart);
  out.set(info, dataStart + shstrtab.length);
  const section = (index: number, name: number, offset: number, size: number): void => {
    const at = shoff + index * 64;
    view.setUint32(at, name, littleEndian);
    view.setBigUint64(at + 0x18, BigInt(offset), littleEndian);
    view.setBigUint64(at + 0x20, BigInt(size), littleEndian);
  };
  section(1, 1, dataStart, shstrtab.length);
  section(2, 11, dataStart + shstrtab.length, info.length);
  return out;
}

describe('module names', () => {
  it('strips directories and compression suffixes and spells - as _', () => {
    expect(moduleNameOf('kernel/drivers/char/hw_random/virtio-rng.ko')).toBe('virtio_rng');
    expect(moduleNameOf('kernel/drivers/block/virtio_blk.ko.xz')).toBe('virtio_blk');
    expect(moduleNameOf('x/net_failover.ko.zst')).toBe('net_failover');
    expect(moduleNameOf('virtio-rng')).toBe('virtio_rng');
  });
});

describe('resolveLoadOrder', () => {
  const available = parseModulesDep(BOOKWORM_MODULES_DEP);

  it('orders the default virtio set the way the bookworm kernel needs it', () => {
    const { modules, builtin } = resolveLoadOrder(available, DEFAULT_GUEST_MODULES, {
      linkOrder: LINK_ORDER,
    });
    expect(builtin).toEqual([]);
    expect(names(modules)).toEqual([
      'virtio_ring',
      'virtio',
      'virtio_pci_modern_dev',
      'virtio_pci_legacy_dev',
      'virtio_pci',
      'virtio_mmio',
      'virtio_blk',
      'failover',
      'net_failover',
      'virtio_net',
      'virtio_console',
      'virtio_rng',
    ]);
    assertTopological(modules);
  });

  it('does not depend on the order dependencies are listed in', () => {
    const shuffled = new Map(
      [...available].map(([name, module]) => [
        name,
        { ...module, deps: [...module.deps].reverse() },
      ]),
    );
    const a = resolveLoadOrder(available, DEFAULT_GUEST_MODULES, { linkOrder: LINK_ORDER });
    const b = resolveLoadOrder(shuffled, DEFAULT_GUEST_MODULES, { linkOrder: LINK_ORDER });
    expect(names(b.modules)).toEqual(names(a.modules));
  });

  it('puts dependencies first for any request order and lists each module once', () => {
    const { modules } = resolveLoadOrder(available, [
      'virtio-rng',
      'virtio_net',
      'virtio_ring',
      'virtio_net',
    ]);
    expect(names(modules)).toEqual([
      'virtio_ring',
      'virtio',
      'virtio_rng',
      'failover',
      'net_failover',
      'virtio_net',
    ]);
    assertTopological(modules);
  });

  it('skips built-in modules (riscv64 builds virtio, virtio_pci and virtio_console in)', () => {
    const riscv = new Map<string, ModuleInfo>([
      ['virtio_mmio', { name: 'virtio_mmio', path: 'virtio_mmio.ko.xz', deps: [] }],
      ['virtio_net', { name: 'virtio_net', path: 'virtio_net.ko.xz', deps: ['net_failover'] }],
      ['net_failover', { name: 'net_failover', path: 'net_failover.ko.xz', deps: ['failover'] }],
      ['failover', { name: 'failover', path: 'failover.ko.xz', deps: [] }],
    ]);
    const result = resolveLoadOrder(
      riscv,
      ['virtio_pci', 'virtio_mmio', 'virtio_net', 'virtio_console'],
      {
        builtin: ['virtio', 'virtio_ring', 'virtio_pci', 'virtio_console'],
      },
    );
    expect(result.builtin).toEqual(['virtio_pci', 'virtio_console']);
    expect(names(result.modules)).toEqual([
      'virtio_mmio',
      'failover',
      'net_failover',
      'virtio_net',
    ]);
  });

  it('names what is missing and who needed it', () => {
    expect(() => resolveLoadOrder(available, ['virtio_gpu'])).toThrow(
      expect.objectContaining({
        code: 'MODULE_NOT_FOUND',
        message: expect.stringContaining('virtio_gpu'),
      }),
    );
    const broken = new Map(available);
    broken.delete('failover');
    expect(() => resolveLoadOrder(broken, ['virtio_net'])).toThrow(
      /failover \(needed by virtio_net\)/,
    );
  });

  it('refuses dependency cycles', () => {
    const cyclic = new Map<string, ModuleInfo>([
      ['a', { name: 'a', path: 'a.ko', deps: ['b'] }],
      ['b', { name: 'b', path: 'b.ko', deps: ['a'] }],
    ]);
    expect(() => resolveLoadOrder(cyclic, ['a'])).toThrow(/cycle: a -> b -> a/);
  });
});

describe('modules.dep round trip', () => {
  it('formats what parses back to the same closure and order', () => {
    const { modules } = resolveLoadOrder(
      parseModulesDep(BOOKWORM_MODULES_DEP),
      DEFAULT_GUEST_MODULES,
      {
        linkOrder: LINK_ORDER,
      },
    );
    const text = formatModulesDep(modules);
    expect(text).toContain(
      'kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n',
    );
    const again = resolveLoadOrder(parseModulesDep(text), DEFAULT_GUEST_MODULES, {
      linkOrder: LINK_ORDER,
    });
    expect(names(again.modules)).toEqual(names(modules));
  });
});

describe('readModinfo', () => {
  it('reads depends= and name= from a little-endian ELF64 module', () => {
    const info = readModinfo(
      makeModuleElf(
        'license=GPL\0depends=virtio_ring,virtio\0name=virtio_blk\0alias=virtio:d00000002v*\0',
      ),
    );
    expect(info.get('name')).toEqual(['virtio_blk']);
    expect(modinfoDepends(info)).toEqual(['virtio_ring', 'virtio']);
  });

  it('reads big-endian modules and treats an empty depends= as none', () => {
    expect(
      modinfoDepends(readModinfo(makeModuleElf('depends=\0name=virtio_ring\0', false))),
    ).toEqual([]);
  });

  it('rejects files that are not ELF64 modules', () => {
    expect(() =>
      readModinfo(Buffer.from('not an elf file at all, not even close to it....................')),
    ).toThrow(/no ELF header/);
    const elf32 = Buffer.from(makeModuleElf('name=x\0'));
    elf32[4] = 1;
    expect(() => readModinfo(elf32)).toThrow(/64-bit/);
    const truncated = makeModuleElf('name=x\0').subarray(0, 100);
    expect(() => readModinfo(truncated)).toThrow(/MODULE_INVALID|section|offset/);
  });
});

describe('resolveModulesIn', () => {
  it('uses .modinfo when there is no modules.dep, reading plain and gzipped modules', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtkit-modules-'));
    try {
      await mkdir(join(dir, 'kernel/drivers/virtio'), { recursive: true });
      await mkdir(join(dir, 'kernel/drivers/block'), { recursive: true });
      writeFileSync(join(dir, 'kernel/drivers/virtio/virtio_ring.ko'), makeModuleElf('depends=\0'));
      writeFileSync(
        join(dir, 'kernel/drivers/virtio/virtio.ko'),
        makeModuleElf('depends=virtio_ring\0'),
      );
      writeFileSync(
        join(dir, 'kernel/drivers/block/virtio_blk.ko.gz'),
        gzipSync(makeModuleElf('depends=virtio,virtio_ring\0')),
      );
      // Unrelated and unreadable: must not be opened because nothing asks for it.
      writeFileSync(join(dir, 'kernel/drivers/virtio/broken.ko'), 'garbage');
      writeFileSync(join(dir, 'modules.builtin'), 'kernel/drivers/virtio/virtio_pci.ko\n');
      const resolved = await resolveModulesIn(dir, ['virtio_blk', 'virtio_pci']);
      expect(resolved.source).toBe('modinfo');
      expect(resolved.builtin).toEqual(['virtio_pci']);
      expect(resolved.modules.map((m) => m.path)).toEqual([
        'kernel/drivers/virtio/virtio_ring.ko',
        'kernel/drivers/virtio/virtio.ko',
        'kernel/drivers/block/virtio_blk.ko.gz',
      ]);
      writeFileSync(join(dir, 'modules.dep'), 'kernel/drivers/block/virtio_blk.ko.gz:\n');
      const fromDep = await resolveModulesIn(dir, ['virtio_blk']);
      expect(fromDep.source).toBe('modules.dep');
      expect(fromDep.modules.map((m) => m.name)).toEqual(['virtio_blk']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
