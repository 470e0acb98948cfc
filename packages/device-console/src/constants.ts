/**
 * virtio-console constants, transcribed from virtio 1.2 §5.3 and Linux
 * include/uapi/linux/virtio_console.h. Each group names the section it comes from.
 */

/** Feature bits, §5.3.3. */
export const ConsoleFeature = {
  /** `cols` and `rows` in the configuration space are valid (port 0's size). */
  SIZE: 0,
  /** Several ports; `max_nr_ports` is valid and the control queues are used. */
  MULTIPORT: 1,
  /** The driver may write a character to `emerg_wr` at any time, even before initialization. */
  EMERG_WRITE: 2,
} as const;

/** Configuration space layout, §5.3.4 (`struct virtio_console_config`, all little-endian). */
export const ConsoleConfig = {
  /** le16 cols: port 0's width in characters. */
  COLS: 0,
  /** le16 rows: port 0's height in characters. */
  ROWS: 2,
  /** le32 max_nr_ports (MULTIPORT). */
  MAX_NR_PORTS: 4,
  /** le32 emerg_wr: write-only; the low byte is output on port 0 (EMERG_WRITE). */
  EMERG_WR: 8,
  /** Size of the structure in bytes. */
  SIZE: 12,
} as const;

/** Control message events, §5.3.6.2 (`struct virtio_console_control.event`). */
export const ControlEvent = {
  /** Driver → device: the driver is ready for control messages (value 1) or failed (0). */
  DEVICE_READY: 0,
  /** Device → driver: a port exists (also used for hot-plug). Linux calls it PORT_ADD. */
  DEVICE_ADD: 1,
  /** Device → driver: a port was removed. Linux calls it PORT_REMOVE. */
  DEVICE_REMOVE: 2,
  /** Driver → device: the port announced with DEVICE_ADD is set up (1) or failed (0). */
  PORT_READY: 3,
  /** Device → driver: the port is a console (hvc); the driver answers with PORT_OPEN 1. */
  CONSOLE_PORT: 4,
  /** Device → driver: a console port's size changed; followed by a 4-byte size. */
  RESIZE: 5,
  /** Both ways: the sender's side of the port is open (1) or closed (0). */
  PORT_OPEN: 6,
  /** Device → driver: the port's name, followed by its bytes (shown in /sys/class/virtio-ports). */
  PORT_NAME: 7,
} as const;
export type ControlEvent = (typeof ControlEvent)[keyof typeof ControlEvent];

/** Names of control events, for messages. */
export const CONTROL_EVENT_NAMES: Readonly<Record<number, string>> = {
  0: 'DEVICE_READY',
  1: 'DEVICE_ADD',
  2: 'DEVICE_REMOVE',
  3: 'PORT_READY',
  4: 'CONSOLE_PORT',
  5: 'RESIZE',
  6: 'PORT_OPEN',
  7: 'PORT_NAME',
};

/** Size of `struct virtio_console_control` (le32 id, le16 event, le16 value), §5.3.6.2. */
export const CONTROL_HEADER_SIZE = 8;

/** Port id the driver uses in DEVICE_READY (Linux `VIRTIO_CONSOLE_BAD_ID`). */
export const NO_PORT_ID = 0xffff_ffff;

/** Queue indexes, §5.3.2: port 0's pair, then the control pair, then one pair per further port. */
export const CONTROL_RECEIVE_QUEUE = 2;
export const CONTROL_TRANSMIT_QUEUE = 3;

/** Queue carrying host → guest data of port `id` (the port's receiveq). */
export function receiveQueueIndex(id: number): number {
  return id === 0 ? 0 : 2 + 2 * id;
}

/** Queue carrying guest → host data of port `id` (the port's transmitq). */
export function transmitQueueIndex(id: number): number {
  return id === 0 ? 1 : 3 + 2 * id;
}

/** The port a data queue belongs to, or `undefined` for the control queues. */
export function portOfQueue(index: number): number | undefined {
  if (index === 0 || index === 1) return 0;
  if (index === CONTROL_RECEIVE_QUEUE || index === CONTROL_TRANSMIT_QUEUE) return undefined;
  return Math.floor((index - 2) / 2);
}

/**
 * Most ports a device offers. QEMU's limit (511: a virtio-pci device has at most 1024 queues, two
 * per port plus the control pair); Linux accepts up to 0x8000.
 */
export const MAX_PORTS = 511;

/**
 * Field order of the RESIZE payload. virtio 1.2 (§5.3.6.2, `struct virtio_console_resize`) says
 * `le16 cols; le16 rows`. Linux read rows then cols from multiport support (2.6.35) until
 * "virtio_console: fix order of fields cols and rows", which the stable kernels took in 6.1.160
 * and 6.12.65 (Debian changelogs). The guest kernels Virtkit boots, Debian's 6.1.192 (bookworm)
 * and 6.12.117 (trixie), read `struct { __virtio16 cols; __virtio16 rows; }`, so `cols-rows` is
 * the default; `rows-cols` is for older guests, which would otherwise swap the two.
 */
export type ResizeLayout = 'rows-cols' | 'cols-rows';

/** Device-specific protocol violation codes (reported with `needsReset: false`). */
export type ConsoleViolationCode =
  /** A control message shorter than its 8-byte header. */
  | 'CONSOLE_CONTROL_SHORT'
  /** An unknown event, or one only the device may send. */
  | 'CONSOLE_CONTROL_EVENT'
  /** A message or data buffer for a port that was never announced to the driver. */
  | 'CONSOLE_PORT_UNKNOWN'
  /** A receive buffer too small for what the device had to write. */
  | 'CONSOLE_BUFFER_SHORT'
  /** A device-readable buffer in a receiveq or a device-writable one in a transmitq (§5.3.6.1). */
  | 'CONSOLE_BUFFER_DIRECTION';
