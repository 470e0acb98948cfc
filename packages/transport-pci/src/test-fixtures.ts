/**
 * Test-only helpers (not exported from the package): a small echo device and little-endian
 * access helpers for bus devices.
 */

import {
  type BusDevice,
  ConfigSpace,
  type DeviceQueue,
  DeviceType,
  Feature,
  featureBit,
  type VirtioDevice,
} from '@virtkit/core';

/** An entropy-typed device with two queues that echo each chain's readable bytes reversed. */
export class EchoDevice implements VirtioDevice {
  readonly deviceType = DeviceType.ENTROPY;
  readonly features =
    featureBit(Feature.RING_EVENT_IDX) |
    featureBit(Feature.RING_INDIRECT_DESC) |
    featureBit(Feature.RING_PACKED);
  readonly queues = [{ maxSize: 16 }, { maxSize: 16 }];
  /** u32 at 0: read-only (0xC0FFEE); u32 at 4: writable. */
  readonly config = new ConfigSpace(8, { writable: [{ offset: 4, length: 4 }] });
  #queues: readonly (DeviceQueue | undefined)[] = [];
  #signal: (queue: number) => void = () => {};
  resets = 0;

  constructor() {
    this.config.setU32(0, 0xc0ffee);
  }

  activate(context: {
    queues: readonly (DeviceQueue | undefined)[];
    signalUsed(queue: number): void;
  }): void {
    this.#queues = context.queues;
    this.#signal = (queue) => context.signalUsed(queue);
  }

  queueNotify(index: number): void {
    const queue = this.#queues[index];
    if (!queue) return;
    do {
      queue.disableNotifications();
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        const bytes = chain.reader().readBytes(chain.readableLength).reverse();
        const writer = chain.writer();
        const n = Math.min(bytes.length, chain.writableLength);
        writer.write(bytes.subarray(0, n));
        queue.addUsed(chain, n);
      }
      if (queue.publishUsed()) this.#signal(index);
    } while (queue.enableNotifications());
  }

  reset(): void {
    this.resets++;
    this.#queues = [];
  }

  /** A device-side configuration change (bumps the generation, raises a config interrupt). */
  changeConfig(value: number): void {
    this.config.setU32(0, value);
  }
}

/** Reads a little-endian value of `width` bytes through a bus device. */
export function busRead(device: BusDevice, offset: number, width: number): number {
  const data = new Uint8Array(width);
  device.read(offset, data);
  let value = 0;
  for (let i = width - 1; i >= 0; i--) value = value * 256 + data[i]!;
  return value;
}

/** Writes a little-endian value of `width` bytes through a bus device. */
export function busWrite(device: BusDevice, offset: number, width: number, value: number): void {
  const data = new Uint8Array(width);
  let rest = value;
  for (let i = 0; i < width; i++) {
    data[i] = rest % 256;
    rest = Math.floor(rest / 256);
  }
  device.write(offset, data);
}
