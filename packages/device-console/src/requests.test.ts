import { DescriptorChain, GuestMemory } from '@virtkit/core';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ControlEvent, portOfQueue, receiveQueueIndex, transmitQueueIndex } from './constants.js';
import {
  checkPortName,
  clampSize,
  decodeControlMessage,
  decodeResize,
  encodeControlMessage,
  encodePortName,
  encodeResize,
  readControlMessage,
} from './requests.js';

function chainOf(segments: Uint8Array[]): DescriptorChain {
  const memory = GuestMemory.fromBuffer(new ArrayBuffer(1 << 16));
  let address = 0x100;
  const readable = segments.map((bytes) => {
    memory.write(address, bytes);
    const segment = { addr: address, len: bytes.length };
    address += bytes.length + 8;
    return segment;
  });
  const total = segments.reduce((sum, s) => sum + s.length, 0);
  return new DescriptorChain(memory, 0, readable, [], total, 0, readable.length);
}

describe('control message encoding (§5.3.6.2)', () => {
  it('lays out id, event and value little-endian', () => {
    const bytes = encodeControlMessage(0x01020304, ControlEvent.PORT_OPEN, 1);
    expect([...bytes]).toEqual([4, 3, 2, 1, 6, 0, 1, 0]);
  });

  it('round-trips through decode for any id, event, value and payload', () => {
    fc.assert(
      fc.property(
        fc.nat({ max: 0xffff_ffff }),
        fc.nat({ max: 0xffff }),
        fc.nat({ max: 0xffff }),
        fc.uint8Array({ maxLength: 64 }),
        (id, event, value, payload) => {
          const message = decodeControlMessage(encodeControlMessage(id, event, value, payload));
          expect(message).toEqual({ id, event, value, payload });
        },
      ),
    );
  });

  it('PORT_NAME carries the UTF-8 name without a terminator', () => {
    const bytes = encodePortName(3, 'org.qemu.guest_agent.0');
    const message = decodeControlMessage(bytes);
    expect(message.event).toBe(ControlEvent.PORT_NAME);
    expect(message.value).toBe(1);
    expect(new TextDecoder().decode(message.payload)).toBe('org.qemu.guest_agent.0');
  });

  it('RESIZE puts cols first in the spec layout and rows first for older Linux guests', () => {
    // Linux 6.1.192 / 6.12.117 handle_control_message: struct { __virtio16 cols; __virtio16 rows; }
    const spec = decodeControlMessage(encodeResize(0, { cols: 132, rows: 43 }, 'cols-rows'));
    expect(spec.event).toBe(ControlEvent.RESIZE);
    expect([...spec.payload]).toEqual([132, 0, 43, 0]);
    expect(decodeResize(spec.payload, 'cols-rows')).toEqual({ cols: 132, rows: 43 });
    const old = decodeControlMessage(encodeResize(0, { cols: 132, rows: 43 }, 'rows-cols'));
    expect([...old.payload]).toEqual([43, 0, 132, 0]);
    expect(decodeResize(old.payload, 'rows-cols')).toEqual({ cols: 132, rows: 43 });
  });

  it('clamps sizes to 16 bits', () => {
    expect(clampSize({ cols: 70000, rows: -3 })).toEqual({ cols: 0xffff, rows: 0 });
    expect(clampSize({ cols: Number.NaN, rows: 24.9 })).toEqual({ cols: 0, rows: 24 });
  });
});

describe('readControlMessage', () => {
  it('reads a header split over several segments', () => {
    const bytes = encodeControlMessage(7, ControlEvent.PORT_READY, 1);
    const parsed = readControlMessage(chainOf([bytes.subarray(0, 3), bytes.subarray(3)]));
    expect(parsed).toEqual({
      ok: true,
      message: { id: 7, event: ControlEvent.PORT_READY, value: 1, payload: new Uint8Array(0) },
    });
  });

  it('refuses a message shorter than its header, for every short length', () => {
    for (let length = 0; length < 8; length++) {
      const parsed = readControlMessage(chainOf([new Uint8Array(length)]));
      expect(parsed.ok).toBe(false);
      if (!parsed.ok) expect(parsed.reason).toMatch(`${length} bytes`);
    }
  });

  it('ignores bytes after the header (no driver event carries a payload)', () => {
    const bytes = new Uint8Array(4096);
    bytes.set(encodeControlMessage(1, ControlEvent.PORT_OPEN, 0));
    const parsed = readControlMessage(chainOf([bytes]));
    expect(parsed.ok && parsed.message.payload.length).toBe(0);
  });
});

describe('port names', () => {
  it('accepts the names QEMU and libvirt use', () => {
    for (const name of ['org.qemu.guest_agent.0', 'com.redhat.spice.0', 'serial-1', 'ünï']) {
      expect(checkPortName(name)).toBeUndefined();
    }
  });

  it('refuses empty, long, spaced, slashed and control-character names', () => {
    for (const name of ['', 'x'.repeat(256), 'a b', 'a/b', 'a\nb', 'a\u0000b', '\u007f']) {
      expect(checkPortName(name)).toMatch(/port name/);
    }
  });
});

describe('queue indexes (§5.3.2)', () => {
  it('maps port 0 to queues 0/1, control to 2/3 and port N to 2N+2/2N+3', () => {
    expect([receiveQueueIndex(0), transmitQueueIndex(0)]).toEqual([0, 1]);
    expect([receiveQueueIndex(1), transmitQueueIndex(1)]).toEqual([4, 5]);
    expect([receiveQueueIndex(5), transmitQueueIndex(5)]).toEqual([12, 13]);
    expect([portOfQueue(0), portOfQueue(1), portOfQueue(2), portOfQueue(3)]).toEqual([
      0,
      0,
      undefined,
      undefined,
    ]);
    for (let id = 1; id < 40; id++) {
      expect(portOfQueue(receiveQueueIndex(id))).toBe(id);
      expect(portOfQueue(transmitQueueIndex(id))).toBe(id);
    }
  });
});
