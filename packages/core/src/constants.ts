/**
 * Virtio constants, transcribed from the OASIS "Virtual I/O Device (VIRTIO) Version 1.2" spec.
 * Each group names the section it comes from. Feature bits are bit numbers; use {@link featureBit}
 * to turn one into a mask.
 */

/** Turns a feature bit number into a 64-bit mask. */
export function featureBit(bit: number): bigint {
  return 1n << BigInt(bit);
}

/** Device IDs, §5 (table in §5 "Device Types"). */
export const DeviceType = {
  NET: 1,
  BLOCK: 2,
  CONSOLE: 3,
  ENTROPY: 4,
  BALLOON: 5,
  SCSI: 8,
  NINEP: 9,
  GPU: 16,
  INPUT: 18,
  VSOCK: 19,
  CRYPTO: 20,
  IOMMU: 23,
  MEM: 24,
  SOUND: 25,
  FS: 26,
  PMEM: 27,
  RPMB: 28,
  SCMI: 32,
  I2C: 34,
  GPIO: 41,
} as const;
/** A virtio device ID from {@link DeviceType}. */
export type DeviceType = (typeof DeviceType)[keyof typeof DeviceType];

/** Device status field bits, §2.1. */
export const DeviceStatus = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 64,
  FAILED: 128,
} as const;

/** Reserved (device-independent) feature bits, §6. Bits 24..40 and 50..127 belong to the transport/ring. */
export const Feature = {
  /** §6: the device accepts indirect descriptors (split §2.7.5.3, packed §2.8.19). */
  RING_INDIRECT_DESC: 28,
  /** §6: used_event / avail_event fields (split §2.7.7, §2.7.10). */
  RING_EVENT_IDX: 29,
  /** §6: compliance with version 1 of the spec (modern transports require it). */
  VERSION_1: 32,
  ACCESS_PLATFORM: 33,
  /** §6, §2.8: packed virtqueue layout. */
  RING_PACKED: 34,
  /** §6: buffers are used in the order they were made available. */
  IN_ORDER: 35,
  ORDER_PLATFORM: 36,
  SR_IOV: 37,
  /** §6: the driver passes extra data (besides the queue index) in notifications. */
  NOTIFICATION_DATA: 38,
  NOTIF_CONFIG_DATA: 39,
  RING_RESET: 40,
  ADMIN_VQ: 41,
} as const;

/** First device-independent (reserved) feature bit, §6. */
export const TRANSPORT_FEATURE_FIRST = 24;
/** Last device-independent (reserved) feature bit this core knows, inclusive, §6. */
export const TRANSPORT_FEATURE_LAST = 41;

/** Descriptor flag: the buffer continues in the `next` descriptor or slot, §2.7.5, §2.8.6. */
export const VIRTQ_DESC_F_NEXT = 1;
/** Descriptor flag: the buffer is device-writable (otherwise device-readable), §2.7.5. */
export const VIRTQ_DESC_F_WRITE = 2;
/** Descriptor flag: the buffer holds a table of indirect descriptors, §2.7.5.3, §2.8.7. */
export const VIRTQ_DESC_F_INDIRECT = 4;

/** Available ring flag: the driver asks not to be interrupted for used buffers, §2.7.6. */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** Used ring flag: the device asks not to be notified of available buffers, §2.7.8. */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Packed descriptor flag AVAIL (bit 7), compared with the wrap counter, §2.8.1. */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
/** Packed descriptor flag USED (bit 15), compared with the wrap counter, §2.8.1. */
export const VIRTQ_DESC_F_USED = 1 << 15;

/** Packed event suppression: notifications enabled, §2.8.10. */
export const RING_EVENT_FLAGS_ENABLE = 0;
/** Packed event suppression: notifications disabled, §2.8.10. */
export const RING_EVENT_FLAGS_DISABLE = 1;
/** Packed event suppression: notify for the descriptor named by off_wrap (EVENT_IDX), §2.8.10. */
export const RING_EVENT_FLAGS_DESC = 2;

/** Largest queue size any layout allows, §2.7 and §2.8 (Queue Size is a 16-bit field; 32768 max). */
export const MAX_QUEUE_SIZE = 32768;

/** Byte size of one descriptor (split and packed), §2.7.5 and §2.8.13. */
export const DESCRIPTOR_SIZE = 16;

/** Alignment of the split ring's descriptor table, §2.7 "Virtqueue Part Alignment". */
export const SPLIT_ALIGN_DESC = 16;
/** Alignment of the split ring's available ring, §2.7 "Virtqueue Part Alignment". */
export const SPLIT_ALIGN_AVAIL = 2;
/** Alignment of the split ring's used ring, §2.7 "Virtqueue Part Alignment". */
export const SPLIT_ALIGN_USED = 4;

/** Alignment of the packed descriptor ring, §2.8.10.1. */
export const PACKED_ALIGN_DESC = 16;
/** Alignment of the packed event suppression structures, §2.8.10.1. */
export const PACKED_ALIGN_EVENT = 4;

/** Interrupt status bit (PCI ISR, MMIO InterruptStatus): used buffers, §4.1.4.5, §4.2.2. */
export const INTERRUPT_USED_BUFFER = 1;
/** Interrupt status bit (PCI ISR, MMIO InterruptStatus): config change, §4.1.4.5, §4.2.2. */
export const INTERRUPT_CONFIG_CHANGE = 2;

/** PCI vendor ID of virtio devices, §4.1.2. */
export const VIRTIO_PCI_VENDOR_ID = 0x1af4;
/** Modern virtio-pci device IDs are 0x1040 + device type, §4.1.2. */
export const VIRTIO_PCI_MODERN_DEVICE_ID_BASE = 0x1040;
/** "No MSI-X vector" in msix_config / queue_msix_vector, §4.1.5.1.2. */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

/** virtio-mmio MagicValue register: "virt" little-endian, §4.2.2. */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
/** virtio-mmio Version register of the modern (non-legacy) interface, §4.2.2. */
export const VIRTIO_MMIO_VERSION = 2;
