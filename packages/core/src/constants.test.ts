import { describe, expect, it } from 'vitest';
import {
  DESCRIPTOR_SIZE,
  DeviceStatus,
  DeviceType,
  Feature,
  featureBit,
  INTERRUPT_CONFIG_CHANGE,
  INTERRUPT_USED_BUFFER,
  MAX_QUEUE_SIZE,
  PACKED_ALIGN_DESC,
  PACKED_ALIGN_EVENT,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  SPLIT_ALIGN_AVAIL,
  SPLIT_ALIGN_DESC,
  SPLIT_ALIGN_USED,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_MMIO_VERSION,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_MODERN_DEVICE_ID_BASE,
  VIRTIO_PCI_VENDOR_ID,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_USED,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from './constants.js';

// Values written out independently from the virtio 1.2 spec and checked against Linux's uapi
// headers (virtio_ids.h, virtio_config.h, virtio_ring.h, virtio_pci.h, virtio_mmio.h): a mistyped
// constant would otherwise go unnoticed, since the ring tests use the same constants.
describe('spec constants', () => {
  it('device IDs (§5)', () => {
    expect(DeviceType).toEqual({
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
    });
  });

  it('device status bits (§2.1)', () => {
    expect(DeviceStatus).toEqual({
      ACKNOWLEDGE: 0x01,
      DRIVER: 0x02,
      DRIVER_OK: 0x04,
      FEATURES_OK: 0x08,
      DEVICE_NEEDS_RESET: 0x40,
      FAILED: 0x80,
    });
  });

  it('reserved feature bits (§6)', () => {
    expect(Feature).toEqual({
      RING_INDIRECT_DESC: 28,
      RING_EVENT_IDX: 29,
      VERSION_1: 32,
      ACCESS_PLATFORM: 33,
      RING_PACKED: 34,
      IN_ORDER: 35,
      ORDER_PLATFORM: 36,
      SR_IOV: 37,
      NOTIFICATION_DATA: 38,
      NOTIF_CONFIG_DATA: 39,
      RING_RESET: 40,
      ADMIN_VQ: 41,
    });
    expect(featureBit(Feature.VERSION_1)).toBe(0x1_0000_0000n);
    expect(featureBit(Feature.RING_PACKED)).toBe(0x4_0000_0000n);
    expect(featureBit(0)).toBe(1n);
  });

  it('ring flags and layout (§2.7, §2.8)', () => {
    expect([VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT]).toEqual([1, 2, 4]);
    expect([VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED]).toEqual([0x80, 0x8000]);
    expect([VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY]).toEqual([1, 1]);
    expect([RING_EVENT_FLAGS_ENABLE, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_DESC]).toEqual([
      0, 1, 2,
    ]);
    expect([SPLIT_ALIGN_DESC, SPLIT_ALIGN_AVAIL, SPLIT_ALIGN_USED]).toEqual([16, 2, 4]);
    expect([PACKED_ALIGN_DESC, PACKED_ALIGN_EVENT]).toEqual([16, 4]);
    expect([DESCRIPTOR_SIZE, MAX_QUEUE_SIZE]).toEqual([16, 32768]);
  });

  it('transport values (§4.1, §4.2)', () => {
    expect([INTERRUPT_USED_BUFFER, INTERRUPT_CONFIG_CHANGE]).toEqual([1, 2]);
    expect([VIRTIO_PCI_VENDOR_ID, VIRTIO_PCI_MODERN_DEVICE_ID_BASE]).toEqual([0x1af4, 0x1040]);
    expect(VIRTIO_MSI_NO_VECTOR).toBe(0xffff);
    // "virt" in little-endian byte order.
    const magic = new DataView(new ArrayBuffer(4));
    magic.setUint32(0, VIRTIO_MMIO_MAGIC, true);
    expect(String.fromCharCode(...new Uint8Array(magic.buffer))).toBe('virt');
    expect(VIRTIO_MMIO_VERSION).toBe(2);
  });
});
