/**
 * Where a virtio-pci function puts its structures inside its one BAR. Two built-in layouts:
 * Firecracker's (fixed, 512 KiB, room for 2048 MSI-X vectors) and a compact one sized to the
 * device (4 KiB pages, so a VMM can still map each structure on its own page).
 */

import { MsixCap } from './constants.js';
import { PciTransportError } from './errors.js';
import { MsixTable } from './msix.js';

/** A reserved range of the BAR. */
export interface BarRegion {
  readonly offset: number;
  readonly size: number;
}

/** Offsets and reserved sizes of every structure in the BAR. */
export interface VirtioPciLayout {
  /** BAR size: a power of two. */
  readonly barSize: number;
  readonly common: BarRegion;
  readonly isr: BarRegion;
  readonly device: BarRegion;
  readonly notify: BarRegion;
  readonly msixTable: BarRegion;
  readonly msixPba: BarRegion;
}

/** What a layout must hold. */
export interface LayoutNeeds {
  readonly commonBytes: number;
  readonly configBytes: number;
  readonly notifyBytes: number;
  readonly msixVectors: number;
}

const PAGE = 0x1000;

/**
 * Firecracker's BAR 0 (src/vmm/src/devices/virtio/transport/pci/device.rs): common config
 * 0x0000, ISR 0x2000, device config 0x4000, notify 0x6000, MSI-X table 0x8000 (2048 vectors),
 * PBA 0x48000; 0x80000 bytes.
 */
export const FIRECRACKER_LAYOUT: VirtioPciLayout = {
  barSize: 0x8_0000,
  common: { offset: 0x0000, size: 0x2000 },
  isr: { offset: 0x2000, size: 0x2000 },
  device: { offset: 0x4000, size: 0x2000 },
  notify: { offset: 0x6000, size: 0x2000 },
  msixTable: { offset: 0x8000, size: 0x4_0000 },
  msixPba: { offset: 0x4_8000, size: 0x800 },
};

/**
 * The smallest page-aligned layout that holds `needs`: common, ISR, device config, notify,
 * MSI-X table, PBA, each on its own 4 KiB page(s), BAR size rounded up to a power of two.
 */
export function compactLayout(needs: LayoutNeeds): VirtioPciLayout {
  let next = 0;
  const take = (bytes: number): BarRegion => {
    const region = { offset: next, size: Math.max(PAGE, Math.ceil(bytes / PAGE) * PAGE) };
    next += region.size;
    return region;
  };
  const common = take(needs.commonBytes);
  const isr = take(1);
  const device = take(needs.configBytes);
  const notify = take(needs.notifyBytes);
  const msixTable = take(MsixTable.tableBytes(Math.max(needs.msixVectors, 1)));
  const msixPba = take(MsixTable.pbaBytes(Math.max(needs.msixVectors, 1)));
  return {
    barSize: 2 ** Math.ceil(Math.log2(next)),
    common,
    isr,
    device,
    notify,
    msixTable,
    msixPba,
  };
}

/** Throws unless `layout` is usable for `needs`: regions inside the BAR, disjoint and big enough. */
export function checkLayout(layout: VirtioPciLayout, needs: LayoutNeeds): void {
  const fail = (message: string): never => {
    throw new PciTransportError('PCI_INVALID_OPTION', `virtio-pci layout: ${message}`);
  };
  if (
    !Number.isSafeInteger(layout.barSize) ||
    !Number.isInteger(Math.log2(layout.barSize)) ||
    layout.barSize < 16
  ) {
    fail(`BAR size ${layout.barSize} is not a power of two of at least 16`);
  }
  const regions: [string, BarRegion, number, number][] = [
    ['common', layout.common, needs.commonBytes, 4],
    ['isr', layout.isr, 1, 1],
    ['device', layout.device, needs.configBytes, 4],
    ['notify', layout.notify, needs.notifyBytes, 2],
    ['msixTable', layout.msixTable, needs.msixVectors * MsixCap.ENTRY_SIZE, 8],
    ['msixPba', layout.msixPba, MsixTable.pbaBytes(needs.msixVectors), 8],
  ];
  for (const [name, region, need, align] of regions) {
    if (
      !Number.isSafeInteger(region.offset) ||
      !Number.isSafeInteger(region.size) ||
      region.offset < 0 ||
      region.offset % align !== 0 ||
      region.offset + region.size > layout.barSize
    ) {
      fail(`${name} region at 0x${region.offset.toString(16)} is misaligned or outside the BAR`);
    }
    if (region.size < need) fail(`${name} region holds ${region.size} bytes, needs ${need}`);
  }
  for (let i = 0; i < regions.length; i++) {
    for (let j = i + 1; j < regions.length; j++) {
      const [nameA, a] = regions[i]!;
      const [nameB, b] = regions[j]!;
      if (
        a.size > 0 &&
        b.size > 0 &&
        a.offset < b.offset + b.size &&
        b.offset < a.offset + a.size
      ) {
        fail(`${nameA} and ${nameB} regions overlap`);
      }
    }
  }
}
