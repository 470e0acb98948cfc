/**
 * The host bridge at 00:00.0: a function with class 06/00 (host bridge), no BARs and no
 * interrupts. Linux's conf1 sanity check (arch/x86/pci/direct.c, for BIOSes older than 2001)
 * and humans running lspci look for it.
 */

import { PciConfiguration, type PciFunction } from './configuration.js';
import { PciClass } from './constants.js';

/** Options of a {@link PciHostBridge}. */
export interface PciHostBridgeOptions {
  /** Default 0x1B36 (Red Hat), with {@link deviceId} 0x0008: QEMU's generic PCIe host bridge. */
  readonly vendorId?: number;
  readonly deviceId?: number;
  readonly subsystemVendorId?: number;
  readonly subsystemId?: number;
}

/**
 * A host bridge function. Firecracker uses 0x8086:0x0D57; we default to QEMU's generic host
 * bridge (0x1B36:0x0008), which no Linux quirk matches.
 */
export class PciHostBridge implements PciFunction {
  readonly config: PciConfiguration;

  constructor(options: PciHostBridgeOptions = {}) {
    this.config = new PciConfiguration({
      vendorId: options.vendorId ?? 0x1b36,
      deviceId: options.deviceId ?? 0x0008,
      classCode: PciClass.BRIDGE_HOST,
      subsystemVendorId: options.subsystemVendorId ?? 0,
      subsystemId: options.subsystemId ?? 0,
    });
    this.config.seal();
  }

  /** The bridge has no BARs: reads 0. */
  readBar(_index: number, _offset: number, data: Uint8Array): void {
    data.fill(0);
  }

  /** The bridge has no BARs: writes are dropped. */
  writeBar(): void {}

  /** Function-level reset (command register back to 0). */
  reset(): void {
    this.config.reset();
  }
}
