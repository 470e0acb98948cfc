/**
 * virtio-blk constants, transcribed from the OASIS "Virtual I/O Device (VIRTIO) Version 1.2"
 * spec, §5.2 (Block Device), and checked against Linux `include/uapi/linux/virtio_blk.h`.
 */

/** Bytes per sector: the unit of every sector number in the protocol, §5.2.6. */
export const SECTOR_SIZE = 512;
/** log2 of {@link SECTOR_SIZE}. */
export const SECTOR_SHIFT = 9;

/** Feature bits, §5.2.3. */
export const BlkFeature = {
  /** Maximum size of any single segment is in `size_max`. */
  SIZE_MAX: 1,
  /** Maximum number of segments in a request is in `seg_max`. */
  SEG_MAX: 2,
  /** Disk-style geometry is in `geometry`. */
  GEOMETRY: 4,
  /** The device is read-only. */
  RO: 5,
  /** Block size of the disk is in `blk_size`. */
  BLK_SIZE: 6,
  /** Cache flush command support (called WCE in the legacy interface). */
  FLUSH: 9,
  /** Optimal I/O alignment is in `topology`. */
  TOPOLOGY: 10,
  /** The driver can toggle the cache between writeback and writethrough (`writeback`). */
  CONFIG_WCE: 11,
  /** Several request queues; their number is in `num_queues`. */
  MQ: 12,
  /** DISCARD requests; limits in `max_discard_sectors`, `max_discard_seg`. */
  DISCARD: 13,
  /** WRITE_ZEROES requests; limits in `max_write_zeroes_sectors`, `max_write_zeroes_seg`. */
  WRITE_ZEROES: 14,
  /** GET_LIFETIME requests (not offered by this device). */
  LIFETIME: 15,
  /** SECURE_ERASE requests (not offered by this device). */
  SECURE_ERASE: 16,
  /** Zoned block device (not offered by this device). */
  ZONED: 17,
} as const;

/** Request types, §5.2.6 (and the zoned ones, §5.2.6 "ZBD"). */
export const BlkRequestType = {
  IN: 0,
  OUT: 1,
  FLUSH: 4,
  GET_ID: 8,
  GET_LIFETIME: 10,
  DISCARD: 11,
  WRITE_ZEROES: 13,
  SECURE_ERASE: 14,
  ZONE_APPEND: 15,
  ZONE_REPORT: 16,
  ZONE_OPEN: 18,
  ZONE_CLOSE: 20,
  ZONE_FINISH: 22,
  ZONE_RESET: 24,
  ZONE_RESET_ALL: 26,
} as const;

/** Request status byte values, §5.2.6. */
export const BlkStatus = {
  OK: 0,
  IOERR: 1,
  UNSUPP: 2,
} as const;
export type BlkStatus = (typeof BlkStatus)[keyof typeof BlkStatus];

/** Size of the request header `{ le32 type; le32 reserved; le64 sector; }`, §5.2.6. */
export const REQUEST_HEADER_SIZE = 16;
/** Size of one `virtio_blk_discard_write_zeroes` segment, §5.2.6. */
export const DISCARD_SEGMENT_SIZE = 16;
/** `flags.unmap` of a discard/write-zeroes segment, §5.2.6. Every other flag bit is reserved. */
export const WRITE_ZEROES_FLAG_UNMAP = 1;
/** Length of the GET_ID device ID string, §5.2.6 (Linux `VIRTIO_BLK_ID_BYTES`). */
export const DEVICE_ID_BYTES = 20;

/** Byte offsets of `struct virtio_blk_config`, §5.2.4. */
export const BlkConfig = {
  CAPACITY: 0,
  SIZE_MAX: 8,
  SEG_MAX: 12,
  GEOMETRY_CYLINDERS: 16,
  GEOMETRY_HEADS: 18,
  GEOMETRY_SECTORS: 19,
  BLK_SIZE: 20,
  TOPOLOGY_PHYSICAL_BLOCK_EXP: 24,
  TOPOLOGY_ALIGNMENT_OFFSET: 25,
  TOPOLOGY_MIN_IO_SIZE: 26,
  TOPOLOGY_OPT_IO_SIZE: 28,
  WRITEBACK: 32,
  UNUSED0: 33,
  NUM_QUEUES: 34,
  MAX_DISCARD_SECTORS: 36,
  MAX_DISCARD_SEG: 40,
  DISCARD_SECTOR_ALIGNMENT: 44,
  MAX_WRITE_ZEROES_SECTORS: 48,
  MAX_WRITE_ZEROES_SEG: 52,
  WRITE_ZEROES_MAY_UNMAP: 56,
  UNUSED1: 57,
  MAX_SECURE_ERASE_SECTORS: 60,
  MAX_SECURE_ERASE_SEG: 64,
  SECURE_ERASE_SECTOR_ALIGNMENT: 68,
  ZONED: 72,
  /** Size of the whole structure, zoned characteristics included. */
  SIZE: 96,
} as const;

/** Device-specific protocol violation codes this device reports. */
export type BlkViolationCode =
  /** The chain has no device-writable byte to put the status in. */
  | 'BLK_NO_STATUS'
  /** Fewer than 16 device-readable bytes: no complete request header. */
  | 'BLK_HEADER_TOO_SHORT'
  /** A sector range outside the disk, or one that overflows. */
  | 'BLK_OUT_OF_RANGE'
  /** A data length or sector that is not a multiple of the sector (or logical block) size. */
  | 'BLK_UNALIGNED'
  /** A write, discard or write-zeroes request on a read-only disk. */
  | 'BLK_WRITE_READ_ONLY'
  /** A GET_ID request whose buffer cannot hold the 20-byte ID. */
  | 'BLK_GET_ID_TOO_SHORT'
  /** DISCARD/WRITE_ZEROES data that is empty or not a whole number of 16-byte segments. */
  | 'BLK_SEGMENTS_MALFORMED'
  /** More DISCARD/WRITE_ZEROES segments than `max_discard_seg` / `max_write_zeroes_seg`. */
  | 'BLK_TOO_MANY_SEGMENTS'
  /** A DISCARD/WRITE_ZEROES segment larger than `max_discard_sectors` / `max_write_zeroes_sectors`. */
  | 'BLK_SEGMENT_TOO_LARGE'
  /** The driver wrote `writeback` without negotiating VIRTIO_BLK_F_CONFIG_WCE. */
  | 'BLK_WRITEBACK_WITHOUT_WCE';
