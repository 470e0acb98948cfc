/**
 * The device against Linux's virtio_console: drivers/char/virtio_console.c and
 * include/uapi/linux/virtio_console.h of Debian's 6.1.192 and 6.12.117, the guest kernels Virtkit
 * boots. Values are written out literally here (not taken from constants.ts), so a transcription
 * mistake fails. The control protocol itself runs against `GuestConsole`, which follows Linux's
 * handle_control_message, in device.test.ts.
 */

import { describe, expect, it } from 'vitest';
import {
  CONTROL_HEADER_SIZE,
  ConsoleConfig,
  ConsoleFeature,
  ControlEvent,
  NO_PORT_ID,
  receiveQueueIndex,
  transmitQueueIndex,
} from './constants.js';
import { ConsoleDevice } from './device.js';
import { encodeControlMessage, encodeResize } from './requests.js';
import { MemoryBackend } from './test-support.js';

describe('Linux virtio_console ABI (include/uapi/linux/virtio_console.h)', () => {
  it('has the feature bits, config offsets, control events and BAD_ID Linux uses', () => {
    expect(ConsoleFeature).toEqual({ SIZE: 0, MULTIPORT: 1, EMERG_WRITE: 2 });
    expect(ConsoleConfig).toEqual({ COLS: 0, ROWS: 2, MAX_NR_PORTS: 4, EMERG_WR: 8, SIZE: 12 });
    expect(ControlEvent).toEqual({
      DEVICE_READY: 0,
      DEVICE_ADD: 1, // VIRTIO_CONSOLE_PORT_ADD
      DEVICE_REMOVE: 2, // VIRTIO_CONSOLE_PORT_REMOVE
      PORT_READY: 3,
      CONSOLE_PORT: 4,
      RESIZE: 5,
      PORT_OPEN: 6,
      PORT_NAME: 7,
    });
    expect(NO_PORT_ID).toBe(0xffff_ffff); // VIRTIO_CONSOLE_BAD_ID, (~(__u32)0)
    // struct virtio_console_control { __virtio32 id; __virtio16 event; __virtio16 value; }
    expect(CONTROL_HEADER_SIZE).toBe(8);
    expect([...encodeControlMessage(0x0102_0304, 6, 1)]).toEqual([4, 3, 2, 1, 6, 0, 1, 0]);
    // handle_control_message, VIRTIO_CONSOLE_RESIZE: struct { __virtio16 cols; __virtio16 rows; }
    expect([...encodeResize(1, { cols: 0x150, rows: 0x32 }, 'cols-rows').subarray(8)]).toEqual([
      0x50, 0x01, 0x32, 0x00,
    ]);
  });

  it('lays out queues as init_vqs finds them: port 0, the control pair, then a pair per port', () => {
    // nr_queues = (max_nr_ports + 1) * 2; port i > 0 uses 2 + 2i (in) and 3 + 2i (out).
    const device = new ConsoleDevice({ backend: new MemoryBackend(), maxPorts: 5 });
    expect(device.queues).toHaveLength((5 + 1) * 2);
    expect([receiveQueueIndex(0), transmitQueueIndex(0)]).toEqual([0, 1]);
    expect([receiveQueueIndex(1), transmitQueueIndex(1)]).toEqual([4, 5]);
    expect([receiveQueueIndex(4), transmitQueueIndex(4)]).toEqual([10, 11]);
    // Without MULTIPORT Linux finds just port 0's pair.
    expect(new ConsoleDevice({ backend: new MemoryBackend() }).queues).toHaveLength(2);
    // virtcons_probe refuses max_nr_ports of 0 or above VIRTCONS_MAX_PORTS (0x8000).
    expect(device.config.getU32(ConsoleConfig.MAX_NR_PORTS)).toBe(5);
  });
});
