/**
 * virtio-mmio version 2 register layout, transcribed from virtio 1.2 §4.2.2 (table "MMIO Device
 * Register Layout") and Linux include/uapi/linux/virtio_mmio.h. Offsets are from the base of the
 * device's window.
 */

/** Register offsets of a virtio-mmio (version 2) device, §4.2.2. */
export const MmioRegister = {
  /** R: 0x74726976 ("virt"). */
  MAGIC_VALUE: 0x000,
  /** R: 2 (1 was the legacy interface, §4.2.4). */
  VERSION: 0x004,
  /** R: virtio device type (§5); 0 would mean "placeholder, ignore me". */
  DEVICE_ID: 0x008,
  /** R: subsystem vendor ID. */
  VENDOR_ID: 0x00c,
  /** R: 32 feature bits of the page selected by DEVICE_FEATURES_SEL. */
  DEVICE_FEATURES: 0x010,
  /** W: feature page the driver wants to read. */
  DEVICE_FEATURES_SEL: 0x014,
  /** W: 32 accepted feature bits of the page selected by DRIVER_FEATURES_SEL. */
  DRIVER_FEATURES: 0x020,
  /** W: feature page the driver writes next. */
  DRIVER_FEATURES_SEL: 0x024,
  /** W: queue the QUEUE_* registers refer to. */
  QUEUE_SEL: 0x030,
  /** R: maximum size of the selected queue; 0 if there is no such queue. */
  QUEUE_NUM_MAX: 0x034,
  /** W: size the driver chose for the selected queue. */
  QUEUE_NUM: 0x038,
  /** RW: 1 once the driver set up the selected queue; reads back the last value written. */
  QUEUE_READY: 0x044,
  /** W: queue index of a notification (with NOTIFICATION_DATA: index in bits 0-15). */
  QUEUE_NOTIFY: 0x050,
  /** R: bit 0 used buffer, bit 1 configuration change. */
  INTERRUPT_STATUS: 0x060,
  /** W: clears the InterruptStatus bits written. */
  INTERRUPT_ACK: 0x064,
  /** RW: device status (§2.1); writing 0 resets the device. */
  STATUS: 0x070,
  /** W: descriptor area address of the selected queue, low and high halves. */
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  /** W: driver area (split: available ring) address, low and high halves. */
  QUEUE_DRIVER_LOW: 0x090,
  QUEUE_DRIVER_HIGH: 0x094,
  /** W: device area (split: used ring) address, low and high halves. */
  QUEUE_DEVICE_LOW: 0x0a0,
  QUEUE_DEVICE_HIGH: 0x0a4,
  /** W: shared memory region the SHM_LEN/SHM_BASE registers refer to. */
  SHM_SEL: 0x0ac,
  /** R: length of the selected shared memory region; all ones when it does not exist. */
  SHM_LEN_LOW: 0x0b0,
  SHM_LEN_HIGH: 0x0b4,
  /** R: guest-physical base of the selected shared memory region; all ones when absent. */
  SHM_BASE_LOW: 0x0b8,
  SHM_BASE_HIGH: 0x0bc,
  /** RW: per-queue reset, only with VIRTIO_F_RING_RESET (not offered by this transport). */
  QUEUE_RESET: 0x0c0,
  /** R: configuration atomicity value (§2.5.1). */
  CONFIG_GENERATION: 0x0fc,
  /** RW: first byte of the device-specific configuration space. */
  CONFIG: 0x100,
} as const;
/** One of the {@link MmioRegister} offsets. */
export type MmioRegister = (typeof MmioRegister)[keyof typeof MmioRegister];

/** Size of one virtio-mmio window (registers and configuration space), as Linux maps it. */
export const MMIO_WINDOW_SIZE = 0x1000;

/**
 * VendorID this transport reports unless told otherwise: "QEMU" (0x554d4551), what QEMU's
 * virtio-mmio reports. Linux and the other drivers we know of read it and match any vendor, so the
 * value only matters to tools that print it; a VMM may pass its own with the `vendorId` option.
 */
export const DEFAULT_VENDOR_ID = 0x554d4551;
