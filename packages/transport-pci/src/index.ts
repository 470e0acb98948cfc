/**
 * @virtkit/transport-pci: modern virtio-pci (virtio 1.2 §4.1) for Virtkit devices. A
 * {@link VirtioPciFunction} puts a device behind a PCI function (capabilities, one memory BAR,
 * MSI-X, INTx through the ISR); a {@link PciRoot} is bus 0 with a host bridge, configuration
 * access through mechanism #1 and ECAM, BAR assignment and routing, and the descriptions a VMM
 * needs for KVM routes, ioeventfds and a device-tree `interrupt-map`.
 *
 * @packageDocumentation
 */

export type { PciWindow } from './allocator.js';
export { PciWindowAllocator } from './allocator.js';
export type {
  ConfigReadHook,
  ConfigWriteHook,
  PciBarDefinition,
  PciBarKind,
  PciBarState,
  PciConfigurationEvents,
  PciFunction,
  PciHeaderOptions,
} from './configuration.js';
export { PciConfiguration } from './configuration.js';
export {
  CONF1_ADDRESS_MASK,
  CONF1_ENABLE,
  CommonCfg,
  ECAM_BUS_SIZE,
  IsrStatus,
  MsixCap,
  PCI_BAR_COUNT,
  PCI_CAPABILITY_START,
  PCI_CONFIG_SPACE_SIZE,
  PCIE_CONFIG_SPACE_SIZE,
  PciBarFlags,
  PciCapabilityId,
  PciClass,
  PciCommand,
  PciConfig,
  PciInterruptPin,
  PciStatus,
  VirtioPciCap,
  VirtioPciCapType,
} from './constants.js';
export type { PciTransportErrorCode } from './errors.js';
export { PciTransportError } from './errors.js';
export type { PciNotifyAddress, VirtioPciFunctionOptions } from './function.js';
export { VirtioPciFunction, virtioPciClassCode } from './function.js';
export type { PciHostBridgeOptions } from './host-bridge.js';
export { PciHostBridge } from './host-bridge.js';
export type { InterruptLine, MsiSink } from './interrupts.js';
export { SharedInterruptLine } from './interrupts.js';
export type { BarRegion, LayoutNeeds, VirtioPciLayout } from './layout.js';
export { compactLayout, FIRECRACKER_LAYOUT } from './layout.js';
export type { MsixEvents, MsixRoute } from './msix.js';
export { MsixTable } from './msix.js';
export type {
  AddFunctionOptions,
  PciAddress,
  PciBarAssignment,
  PciBarChange,
  PciInterruptMap,
  PciIntxInput,
  PciIntxRoute,
  PciMsixRoute,
  PciQueueNotify,
  PciRootEvents,
  PciRootOptions,
} from './root.js';
export { PciConfigIo, PciRoot } from './root.js';
