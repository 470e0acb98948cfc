/**
 * PCI and virtio-pci constants, transcribed from the PCI Local Bus Specification 3.0 (§6.1-§6.8,
 * type 0 configuration header, capabilities, MSI-X), Linux include/uapi/linux/pci_regs.h and
 * include/uapi/linux/virtio_pci.h, and virtio 1.2 §4.1 (Virtio Over PCI Bus).
 */

/** Bytes of a function's configuration space reachable through config mechanism #1 (PCI). */
export const PCI_CONFIG_SPACE_SIZE = 256;
/** Bytes of a function's configuration space reachable through ECAM (PCI Express). */
export const PCIE_CONFIG_SPACE_SIZE = 4096;

/** Type 0 configuration header offsets (PCI 3.0 §6.1, Linux pci_regs.h). */
export const PciConfig = {
  VENDOR_ID: 0x00,
  DEVICE_ID: 0x02,
  COMMAND: 0x04,
  STATUS: 0x06,
  REVISION_ID: 0x08,
  /** Programming interface, subclass and base class: three bytes from 0x09. */
  CLASS_PROG: 0x09,
  CLASS_DEVICE: 0x0a,
  CACHE_LINE_SIZE: 0x0c,
  LATENCY_TIMER: 0x0d,
  HEADER_TYPE: 0x0e,
  BIST: 0x0f,
  BAR0: 0x10,
  CARDBUS_CIS: 0x28,
  SUBSYSTEM_VENDOR_ID: 0x2c,
  SUBSYSTEM_ID: 0x2e,
  ROM_ADDRESS: 0x30,
  CAPABILITY_LIST: 0x34,
  INTERRUPT_LINE: 0x3c,
  INTERRUPT_PIN: 0x3d,
  MIN_GNT: 0x3e,
  MAX_LAT: 0x3f,
} as const;

/** Number of base address registers in a type 0 header. */
export const PCI_BAR_COUNT = 6;
/** First offset a capability may use (after the 64-byte type 0 header). */
export const PCI_CAPABILITY_START = 0x40;

/** Command register bits (PCI 3.0 §6.2.2). */
export const PciCommand = {
  IO_SPACE: 1 << 0,
  MEMORY_SPACE: 1 << 1,
  BUS_MASTER: 1 << 2,
  PARITY: 1 << 6,
  SERR: 1 << 8,
  INTX_DISABLE: 1 << 10,
} as const;

/** Command bits a guest can change on our functions; the rest read as 0. */
export const PCI_COMMAND_WRITABLE =
  PciCommand.IO_SPACE |
  PciCommand.MEMORY_SPACE |
  PciCommand.BUS_MASTER |
  PciCommand.PARITY |
  PciCommand.SERR |
  PciCommand.INTX_DISABLE;

/** Status register bits (PCI 3.0 §6.2.3). */
export const PciStatus = {
  /** Read-only: the function's INTx is pending (set regardless of INTX_DISABLE). */
  INTERRUPT: 1 << 3,
  /** Read-only: the capability list at 0x34 is valid. */
  CAP_LIST: 1 << 4,
} as const;

/** Header type values (PCI 3.0 §6.2.1). */
export const PCI_HEADER_TYPE_NORMAL = 0x00;
/** Bit 7 of the header type: the device has more than one function. */
export const PCI_HEADER_TYPE_MULTIFUNCTION = 0x80;

/** BAR low bits (PCI 3.0 §6.2.5.1). */
export const PciBarFlags = {
  IO_SPACE: 0x1,
  MEM_TYPE_32: 0x0,
  MEM_TYPE_64: 0x4,
  MEM_PREFETCH: 0x8,
} as const;

/** Capability IDs (PCI 3.0 Appendix H). */
export const PciCapabilityId = {
  VENDOR_SPECIFIC: 0x09,
  MSIX: 0x11,
} as const;

/** Class codes as the 24-bit value of offsets 0x09-0x0B: base class, subclass, programming interface. */
export const PciClass = {
  /** 06/00/00: host bridge. */
  BRIDGE_HOST: 0x06_00_00,
  /** 01/00/00: SCSI storage (QEMU's virtio-blk-pci and virtio-scsi-pci). */
  STORAGE_SCSI: 0x01_00_00,
  /** 01/80/00: other mass storage controller (Firecracker's and Cloud Hypervisor's virtio-blk). */
  STORAGE_OTHER: 0x01_80_00,
  /** 02/00/00: Ethernet controller. */
  NETWORK_ETHERNET: 0x02_00_00,
  /** 03/80/00: other display controller (QEMU's virtio-gpu-pci). */
  DISPLAY_OTHER: 0x03_80_00,
  /** 07/80/00: other simple communication controller (QEMU's virtio-serial-pci). */
  COMMUNICATION_OTHER: 0x07_80_00,
  /** 09/80/00: other input device (QEMU's virtio-input-pci). */
  INPUT_OTHER: 0x09_80_00,
  /** FF/00/00: device does not fit a class (QEMU's PCI_CLASS_OTHERS: rng, balloon, vsock...). */
  OTHER: 0xff_00_00,
} as const;

/** MSI-X capability layout (PCI 3.0 §6.8.2). */
export const MsixCap = {
  /** Message control, 16 bits at +2. */
  CONTROL: 2,
  /** Table offset and BIR, 32 bits at +4. */
  TABLE: 4,
  /** PBA offset and BIR, 32 bits at +8. */
  PBA: 8,
  /** Size of the capability structure. */
  SIZE: 12,
  /** Message control: table size minus one, bits 10:0 (read-only). */
  CONTROL_TABLE_SIZE: 0x07ff,
  /** Message control: function mask. */
  CONTROL_MASK_ALL: 1 << 14,
  /** Message control: MSI-X enable. */
  CONTROL_ENABLE: 1 << 15,
  /** Bytes per table entry: address low, address high, data, vector control. */
  ENTRY_SIZE: 16,
  /** Vector control bit 0: the vector is masked. */
  ENTRY_MASKED: 1,
  /** Most vectors a function may have. */
  MAX_VECTORS: 2048,
} as const;

/** virtio_pci_cap cfg_type values, virtio 1.2 §4.1.4. */
export const VirtioPciCapType = {
  COMMON_CFG: 1,
  NOTIFY_CFG: 2,
  ISR_CFG: 3,
  DEVICE_CFG: 4,
  PCI_CFG: 5,
  SHARED_MEMORY_CFG: 8,
  VENDOR_CFG: 9,
} as const;

/** virtio_pci_cap field offsets (16 bytes; the notify cap adds a multiplier, the PCI cfg cap data). */
export const VirtioPciCap = {
  VNDR: 0,
  NEXT: 1,
  LEN: 2,
  CFG_TYPE: 3,
  BAR: 4,
  ID: 5,
  OFFSET: 8,
  LENGTH: 12,
  /** Size of struct virtio_pci_cap. */
  SIZE: 16,
  /** struct virtio_pci_notify_cap: notify_off_multiplier at +16, size 20. */
  NOTIFY_OFF_MULTIPLIER: 16,
  NOTIFY_SIZE: 20,
  /** struct virtio_pci_cfg_cap: pci_cfg_data at +16, size 20. */
  PCI_CFG_DATA: 16,
  PCI_CFG_SIZE: 20,
} as const;

/** struct virtio_pci_common_cfg field offsets, virtio 1.2 §4.1.4.3. */
export const CommonCfg = {
  DEVICE_FEATURE_SELECT: 0x00,
  DEVICE_FEATURE: 0x04,
  DRIVER_FEATURE_SELECT: 0x08,
  DRIVER_FEATURE: 0x0c,
  CONFIG_MSIX_VECTOR: 0x10,
  NUM_QUEUES: 0x12,
  DEVICE_STATUS: 0x14,
  CONFIG_GENERATION: 0x15,
  QUEUE_SELECT: 0x16,
  QUEUE_SIZE: 0x18,
  QUEUE_MSIX_VECTOR: 0x1a,
  QUEUE_ENABLE: 0x1c,
  QUEUE_NOTIFY_OFF: 0x1e,
  QUEUE_DESC_LO: 0x20,
  QUEUE_DESC_HI: 0x24,
  QUEUE_DRIVER_LO: 0x28,
  QUEUE_DRIVER_HI: 0x2c,
  QUEUE_DEVICE_LO: 0x30,
  QUEUE_DEVICE_HI: 0x34,
  /**
   * Size of the structure without the fields that need VIRTIO_F_NOTIF_CONFIG_DATA or
   * VIRTIO_F_RING_RESET (queue_notify_data, queue_reset): Linux's sizeof(struct
   * virtio_pci_common_cfg), which is what it maps and checks the capability length against.
   */
  SIZE: 0x38,
} as const;

/** ISR status bits, virtio 1.2 §4.1.4.5. */
export const IsrStatus = {
  QUEUE: 1,
  CONFIG: 2,
} as const;

/** Interrupt pins as the interrupt pin register encodes them (0 means "uses no INTx"). */
export const PciInterruptPin = {
  NONE: 0,
  INTA: 1,
  INTB: 2,
  INTC: 3,
  INTD: 4,
} as const;

/** Config mechanism #1 (PCI 3.0 §3.2.2.3.2): the address register's enable bit. */
export const CONF1_ENABLE = 0x8000_0000;
/**
 * Bits of the 0xCF8 address register that hold state: enable, bus, device, function, register.
 * Bits 30:24 are reserved and bits 1:0 read 0 (XFree86's probe writes ~0 and expects 0x80fffffc).
 */
export const CONF1_ADDRESS_MASK = 0x80ff_fffc;

/** Device numbers on one bus, functions per device. */
export const PCI_DEVICES_PER_BUS = 32;
export const PCI_FUNCTIONS_PER_DEVICE = 8;
/** Bytes of ECAM window per bus (32 devices x 8 functions x 4 KiB). */
export const ECAM_BUS_SIZE = 1 << 20;
