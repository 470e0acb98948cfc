import { PackedDeviceQueue } from './packed.js';
import { SplitDeviceQueue } from './split.js';
import type { DeviceQueue, DeviceQueueOptions, QueueSetup, RingLayout } from './types.js';

/**
 * Creates the device side of a queue in the negotiated layout. Throws `QueueConfigError` when the
 * setup cannot be used (size, alignment, rings outside guest memory).
 */
export function createDeviceQueue(
  layout: RingLayout,
  setup: QueueSetup,
  options: DeviceQueueOptions,
): DeviceQueue {
  return layout === 'packed'
    ? new PackedDeviceQueue(setup, options)
    : new SplitDeviceQueue(setup, options);
}
