/**
 * vhost-user protocol constants, transcribed from QEMU's docs/interop/vhost-user.rst ("Message
 * Specification", "Protocol features", "Front-end message types", "Back-end message types") and
 * the inflight I/O tracking layout of the same document ("Inflight I/O tracking").
 */

/** Requests the front-end (QEMU, Cloud Hypervisor) sends ("Front-end message types"). */
export const Request = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_LOG_BASE: 6,
  SET_LOG_FD: 7,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
  SEND_RARP: 19,
  NET_SET_MTU: 20,
  SET_BACKEND_REQ_FD: 21,
  IOTLB_MSG: 22,
  SET_VRING_ENDIAN: 23,
  GET_CONFIG: 24,
  SET_CONFIG: 25,
  CREATE_CRYPTO_SESSION: 26,
  CLOSE_CRYPTO_SESSION: 27,
  POSTCOPY_ADVISE: 28,
  POSTCOPY_LISTEN: 29,
  POSTCOPY_END: 30,
  GET_INFLIGHT_FD: 31,
  SET_INFLIGHT_FD: 32,
  GPU_SET_SOCKET: 33,
  RESET_DEVICE: 34,
  VRING_KICK: 35,
  GET_MAX_MEM_SLOTS: 36,
  ADD_MEM_REG: 37,
  REM_MEM_REG: 38,
  SET_STATUS: 39,
  GET_STATUS: 40,
} as const;

/** Names of {@link Request} codes, for messages. */
export const REQUEST_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(Request).map(([name, code]) => [code, name]),
);

/** Names a request code for log and error messages. */
export function requestName(code: number): string {
  return REQUEST_NAMES.get(code) ?? `request ${code}`;
}

/** Requests the back-end sends on the back-end channel ("Back-end message types"). */
export const BackendRequest = {
  IOTLB_MSG: 1,
  CONFIG_CHANGE_MSG: 2,
  VRING_HOST_NOTIFIER_MSG: 3,
} as const;

/** Protocol feature bits ("Protocol features"). */
export const ProtocolFeature = {
  MQ: 0,
  LOG_SHMFD: 1,
  RARP: 2,
  REPLY_ACK: 3,
  MTU: 4,
  BACKEND_REQ: 5,
  CROSS_ENDIAN: 6,
  CRYPTO_SESSION: 7,
  PAGEFAULT: 8,
  CONFIG: 9,
  BACKEND_SEND_FD: 10,
  HOST_NOTIFIER: 11,
  INFLIGHT_SHMFD: 12,
  RESET_DEVICE: 13,
  INBAND_NOTIFICATIONS: 14,
  CONFIGURE_MEM_SLOTS: 15,
  STATUS: 16,
} as const;

/**
 * Feature bit 30: the back-end speaks GET/SET_PROTOCOL_FEATURES. A vhost-user bit (virtio's
 * unused legacy bit 30), never a virtio feature: it is stripped before features reach core.
 */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
/** Feature bit 26: dirty-page logging for live migration (not supported). */
export const VHOST_F_LOG_ALL = 26;

/** Header: u32 request, u32 flags, u32 size ("Header"). */
export const HEADER_SIZE = 12;
/** Flags: the protocol version in the low two bits. */
export const VERSION_MASK = 0x3;
export const VERSION = 0x1;
/** Flags bit 2: this message is a reply. */
export const FLAG_REPLY = 1 << 2;
/** Flags bit 3: the front-end wants a reply (REPLY_ACK). */
export const FLAG_NEED_REPLY = 1 << 3;

/** Largest payload accepted: the biggest message here is GET/SET_CONFIG (12 + 256 bytes). */
export const MAX_PAYLOAD_SIZE = 4096;
/** Regions one SET_MEM_TABLE carries (VHOST_MEMORY_BASELINE_NREGIONS). */
export const MAX_MEMORY_REGIONS = 8;
/** Bytes of one region entry: guest address, size, user address, mmap offset (u64 each). */
export const MEMORY_REGION_SIZE = 32;
/** Largest configuration space access (QEMU's VHOST_USER_MAX_CONFIG_SIZE). */
export const MAX_CONFIG_SIZE = 256;
/** GET/SET_CONFIG payload header: offset, size, flags (u32 each). */
export const CONFIG_HEADER_SIZE = 12;
/** SET_CONFIG flags: a write of writable fields by the driver, or a migration restore. */
export const CONFIG_FLAG_WRITABLE = 0;
export const CONFIG_FLAG_MIGRATION = 1;

/** vring index in bits 0-7 of the SET_VRING_KICK/CALL/ERR payload. */
export const VRING_INDEX_MASK = 0xff;
/** Bit 8: no descriptor accompanies the message (polling, or no interrupts). */
export const VRING_NOFD_MASK = 1 << 8;
/** SET_VRING_ADDR flags bit 0: log used-ring writes (migration; not supported). */
export const VRING_F_LOG = 1;

/** Payload sizes ("Payload"): a vring state is index + num, an address description 40 bytes. */
export const U64_SIZE = 8;
export const VRING_STATE_SIZE = 8;
export const VRING_ADDR_SIZE = 40;
/**
 * VhostUserInflight: mmap size (u64), mmap offset (u64), num queues (u16), queue size (u16). The
 * C struct is not packed, so QEMU sends 24 bytes (4 of tail padding); 20 is accepted too.
 */
export const INFLIGHT_DESCRIPTION_SIZE = 24;
export const INFLIGHT_DESCRIPTION_FIELDS = 20;

/** Inflight I/O tracking (split ring): per-queue header, then one 16-byte state per descriptor. */
export const INFLIGHT_SPLIT_HEADER = 16;
export const INFLIGHT_SPLIT_DESC = 16;
/**
 * Inflight I/O tracking (packed ring, QueueRegionPacked): a 32-byte header (the document's fields
 * take 29 bytes; the state array is 8-aligned), then one 32-byte DescStatePacked per descriptor.
 */
export const INFLIGHT_PACKED_HEADER = 32;
export const INFLIGHT_PACKED_DESC = 32;
/** Each queue's inflight region starts on a 64-byte boundary (as libvhost-user lays it out). */
export const INFLIGHT_ALIGNMENT = 64;
/** Version written into an initialized inflight region. */
export const INFLIGHT_VERSION = 1;

/** Packed ring SET/GET_VRING_BASE: wrap counter in bit 15 of each 16-bit half. */
export const PACKED_WRAP_BIT = 0x8000;
