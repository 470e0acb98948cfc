/**
 * The function's configuration space checked the way Linux's virtio-pci driver checks it before
 * it drives a device (drivers/virtio/virtio_pci_modern_dev.c, Linux 6.1 and 6.12:
 * `virtio_pci_find_capability`, `vp_modern_map_capability`, `vp_modern_probe`,
 * `vp_modern_map_vq_notify`), over every layout option, so a layout Linux would refuse fails here
 * rather than in a guest's dmesg.
 */

import { type BusDevice, ConfigSpace, type VirtioDevice } from '@virtkit/core';
import { createTestMemory } from '@virtkit/core/testing';
import { describe, expect, it } from 'vitest';
import { VirtioPciFunction, type VirtioPciFunctionOptions } from './function.js';
import { busRead, busWrite } from './test-fixtures.js';

/** Linux include/uapi/linux/virtio_pci.h and pci_regs.h, written out again on purpose. */
const CAP = { VNDR: 0x09, MSIX: 0x11, COMMON: 1, NOTIFY: 2, ISR: 3, DEVICE: 4 } as const;
/** sizeof(struct virtio_pci_common_cfg): the minimum length Linux 6.1 and 6.12 accept. */
const COMMON_CFG_SIZE = 0x38;
const PAGE_SIZE = 0x1000;

/**
 * Common configuration fields Linux 6.1 and 6.12 access without optional features, at their
 * access width (vp_modern_get_features ... vp_modern_queue_address, vp_modern_get_queue_size,
 * vp_modern_get_queue_enable, vp_modern_get_queue_notify_off, vp_modern_generation...).
 * queue_notify_data (0x38), queue_reset (0x3a) and admin_queue_index/num (0x3c/0x3e) are read
 * only with NOTIF_CONFIG_DATA, RING_RESET or ADMIN_VQ, which the function refuses to offer.
 */
const LINUX_COMMON_FIELDS: readonly [name: string, offset: number, width: 1 | 2 | 4][] = [
  ['device_feature_select', 0x00, 4],
  ['device_feature', 0x04, 4],
  ['guest_feature_select', 0x08, 4],
  ['guest_feature', 0x0c, 4],
  ['msix_config', 0x10, 2],
  ['num_queues', 0x12, 2],
  ['device_status', 0x14, 1],
  ['config_generation', 0x15, 1],
  ['queue_select', 0x16, 2],
  ['queue_size', 0x18, 2],
  ['queue_msix_vector', 0x1a, 2],
  ['queue_enable', 0x1c, 2],
  ['queue_notify_off', 0x1e, 2],
  ['queue_desc_lo', 0x20, 4],
  ['queue_desc_hi', 0x24, 4],
  ['queue_avail_lo', 0x28, 4],
  ['queue_avail_hi', 0x2c, 4],
  ['queue_used_lo', 0x30, 4],
  ['queue_used_hi', 0x34, 4],
];

interface Bar {
  readonly size: number;
  readonly memory: boolean;
}

/** `__pci_read_base` for every BAR: all ones, read back, restore. */
function sizeBars(config: BusDevice): Map<number, Bar> {
  const bars = new Map<number, Bar>();
  for (let index = 0; index < 6; index++) {
    const reg = 0x10 + 4 * index;
    const original = busRead(config, reg, 4);
    busWrite(config, reg, 4, 0xffff_ffff);
    const low = busRead(config, reg, 4);
    busWrite(config, reg, 4, original);
    if (low === 0 || low & 1) continue;
    let mask = BigInt(low & 0xffff_fff0);
    const is64 = (low & 0x6) === 0x4;
    if (is64) {
      const high = busRead(config, reg + 4, 4);
      busWrite(config, reg + 4, 4, 0xffff_ffff);
      mask |= BigInt(busRead(config, reg + 4, 4)) << 32n;
      busWrite(config, reg + 4, 4, high);
    }
    bars.set(index, { size: Number(mask & -mask), memory: true });
    if (is64) index++;
  }
  return bars;
}

/** `pci_find_capability` / `pci_find_next_capability` with their TTL of 48. */
function capabilities(config: BusDevice): { id: number; pos: number }[] {
  if (!(busRead(config, 0x06, 2) & 0x10)) return [];
  const found: { id: number; pos: number }[] = [];
  let pos = busRead(config, 0x34, 1);
  for (let ttl = 48; ttl > 0 && pos >= 0x40; ttl--) {
    pos &= ~3;
    const id = busRead(config, pos, 1);
    if (id === 0xff) break;
    found.push({ id, pos });
    pos = busRead(config, pos + 1, 1);
  }
  return found;
}

/** What Linux's checks concluded; `problems` lists each dev_err it would print. */
interface Probe {
  problems: string[];
  commonLength: number;
  notifyLength: number;
  deviceLength: number;
  multiplier: number;
  /** Offsets (from the notify structure) of each queue's notify address, as Linux computes. */
  queueNotify: number[];
}

/** `vp_modern_probe` and `vp_modern_map_vq_notify`, with the 6.12 "bar changed" check. */
function linuxProbe(fn: VirtioPciFunction, config: BusDevice, bar: BusDevice): Probe {
  const problems: string[] = [];
  const bars = sizeBars(config);
  const modernBars = new Set<number>();
  const find = (type: number): number => {
    for (const { id, pos } of capabilities(config)) {
      if (id !== CAP.VNDR) continue;
      const capType = busRead(config, pos + 3, 1);
      const barIndex = busRead(config, pos + 4, 1);
      if (barIndex > 5) continue;
      if (capType === type && bars.get(barIndex)?.size) {
        modernBars.add(barIndex);
        return pos;
      }
    }
    return 0;
  };
  const map = (
    what: string,
    pos: number,
    minlen: number,
    align: number,
    start: number,
    size: number,
  ): number => {
    const barIndex = busRead(config, pos + 4, 1);
    let offset = busRead(config, pos + 8, 4);
    let length = busRead(config, pos + 12, 4);
    if (barIndex >= 6 || !modernBars.has(barIndex)) problems.push(`${what}: bar changed`);
    if (length <= start) problems.push(`${what}: bad capability len ${length}`);
    if (length - start < minlen) problems.push(`${what}: bad capability len ${length}`);
    length -= start;
    offset += start;
    if (offset % align !== 0) problems.push(`${what}: offset ${offset} not aligned to ${align}`);
    length = Math.min(length, size);
    if (minlen + offset > (bars.get(barIndex)?.size ?? 0)) {
      problems.push(`${what}: map ${minlen}@${offset} out of range`);
    }
    return length;
  };

  const device = busRead(config, 0x02, 2);
  if (device < 0x1040 || device > 0x107f) problems.push(`device ID 0x${device.toString(16)}`);
  const common = find(CAP.COMMON);
  const isr = find(CAP.ISR);
  const notify = find(CAP.NOTIFY);
  if (!common || !isr || !notify) {
    problems.push(`missing capabilities ${common}/${isr}/${notify}`);
    return {
      problems,
      commonLength: 0,
      notifyLength: 0,
      deviceLength: 0,
      multiplier: 0,
      queueNotify: [],
    };
  }
  const deviceCap = find(CAP.DEVICE);
  // Linux 6.12 maps up to offsetofend(admin_queue_num); 6.1 up to the 0x38 bytes it knows.
  const commonLength = map('common', common, COMMON_CFG_SIZE, 4, 0, 0x40);
  map('isr', isr, 1, 1, 0, 1);
  const multiplier = busRead(config, notify + 16, 4);
  const notifyLengthField = busRead(config, notify + 12, 4);
  const notifyOffset = busRead(config, notify + 8, 4);
  const mapAll = notifyLengthField + (notifyOffset % PAGE_SIZE) <= PAGE_SIZE;
  const notifyLength = mapAll ? map('notify', notify, 2, 2, 0, notifyLengthField) : 0;
  const deviceLength = deviceCap ? map('device', deviceCap, 0, 4, 0, PAGE_SIZE) : 0;

  // setup_vq for each queue: queue_notify_off, then vp_modern_map_vq_notify's bound.
  const common0 = fn.layout.common.offset;
  const queues = busRead(bar, common0 + 0x12, 2);
  const queueNotify: number[] = [];
  for (let index = 0; index < queues; index++) {
    busWrite(bar, common0 + 0x16, 2, index);
    const off = busRead(bar, common0 + 0x1e, 2);
    const at = off * multiplier;
    if (mapAll) {
      if (at + 2 > notifyLength) problems.push(`bad notification offset ${off} for queue ${index}`);
    } else {
      map(`notify queue ${index}`, notify, 2, 2, at, 2);
    }
    queueNotify.push(at);
  }
  return { problems, commonLength, notifyLength, deviceLength, multiplier, queueNotify };
}

function device(queues: number, configBytes: number): VirtioDevice {
  return {
    deviceType: 26,
    features: 0n,
    queues: Array.from({ length: queues }, () => ({ maxSize: 256 })),
    ...(configBytes > 0 ? { config: new ConfigSpace(configBytes) } : {}),
    activate() {},
    queueNotify() {},
    reset() {},
  };
}

const variants: [string, Partial<VirtioPciFunctionOptions>, number, number][] = [
  ['the default layout', {}, 2, 8],
  ['a compact layout in 32-bit BAR 2', { layout: 'compact', bar64: false, barIndex: 2 }, 2, 8],
  ['no MSI-X', { msixVectors: 0 }, 1, 4],
  ['no device config', {}, 3, 0],
  ['one shared notify address', { notifyOffMultiplier: 0 }, 4, 16],
  ['a 2-byte multiplier', { notifyOffMultiplier: 2 }, 4, 16],
  ['a page per queue (per-queue notify mapping)', { notifyOffMultiplier: 0x1000 }, 2, 16],
  ['64 queues', { layout: 'compact' }, 64, 256],
  ['a page-sized config space', { layout: 'compact', barIndex: 4 }, 2, 0x1000],
];

describe("Linux's vp_modern_probe checks", () => {
  it.each(variants)('accepts %s', (_, options, queues, configBytes) => {
    const fn = new VirtioPciFunction(device(queues, configBytes), {
      memory: createTestMemory({ size: 1 << 16 }).memory,
      ...options,
    });
    const config: BusDevice = {
      read: (offset, data) => fn.config.read(offset, data),
      write: (offset, data) => fn.config.write(offset, data),
    };
    const bar = fn.barDevice();
    const probe = linuxProbe(fn, config, bar);
    expect(probe.problems).toEqual([]);
    expect(probe.commonLength).toBeGreaterThanOrEqual(COMMON_CFG_SIZE);
    expect(probe.multiplier).toBe(fn.notifyOffMultiplier);
    // vp_get: BUG_ON(offset + len > device_len) must never fire for a field of the device.
    expect(probe.deviceLength).toBe(configBytes);
    // Each queue notifies at its own address (or all at one with multiplier 0), and a write
    // there reaches the right queue: the VMM's notifyAddress agrees with Linux's arithmetic.
    expect(probe.queueNotify).toEqual(
      fn.notifyAddresses().map((at) => at.offset - fn.layout.notify.offset),
    );
    // Every common field Linux reads answers at its width, with no register-level violation.
    for (const [, offset, width] of LINUX_COMMON_FIELDS) {
      expect(offset + width).toBeLessThanOrEqual(probe.commonLength);
      busRead(bar, fn.layout.common.offset + offset, width);
    }
    expect(fn.violations.toJSON()).toEqual({});
  });

  it('would refuse a common capability shorter than struct virtio_pci_common_cfg', () => {
    // The model must be able to say no: shrink the length field and probe again.
    const fn = new VirtioPciFunction(device(2, 8), {
      memory: createTestMemory({ size: 1 << 16 }).memory,
    });
    fn.config.setU32(fn.capabilityOffsets.common + 12, COMMON_CFG_SIZE - 4);
    fn.config.setU32(fn.capabilityOffsets.isr + 8, 0x7_ffff + 1);
    const config: BusDevice = {
      read: (offset, data) => fn.config.read(offset, data),
      write: (offset, data) => fn.config.write(offset, data),
    };
    expect(linuxProbe(fn, config, fn.barDevice()).problems).toEqual([
      'common: bad capability len 52',
      'isr: map 1@524288 out of range',
    ]);
  });
});
