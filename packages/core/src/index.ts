/**
 * @virtkit/core: virtio for TypeScript. Spec constants, guest memory, split and packed virtqueues
 * (device and driver side), the device-status state machine and feature negotiation, the device
 * plugin API and registry. Runs in Node and in browsers. The test harness is in
 * `@virtkit/core/testing`.
 *
 * @packageDocumentation
 */

export type { BusDevice } from './bus.js';
export { accessValue, setAccessValue } from './bus.js';
export type { ConfigSpaceOptions, ConfigWriteHandler, WritableRange } from './config-space.js';
export { ConfigSpace } from './config-space.js';
export {
  DESCRIPTOR_SIZE,
  DeviceStatus,
  DeviceType,
  Feature,
  featureBit,
  INTERRUPT_CONFIG_CHANGE,
  INTERRUPT_USED_BUFFER,
  MAX_QUEUE_SIZE,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  TRANSPORT_FEATURE_FIRST,
  TRANSPORT_FEATURE_LAST,
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
export type {
  Activation,
  DeviceControllerOptions,
  DeviceEvents,
  QueueArea,
  QueueRegisters,
} from './controller.js';
export { DeviceController } from './controller.js';
export type {
  ActivationContext,
  DeviceEnvironment,
  DevicePlugin,
  InterruptSink,
  PluginMeta,
  QueueSpec,
  Snapshottable,
  VirtioDevice,
} from './device.js';
export { checkDeviceShape, defineDevicePlugin, isSnapshottable } from './device.js';
export type {
  ProtocolViolation,
  ViolationCode,
  ViolationSink,
  VirtkitErrorCode,
} from './errors.js';
export {
  formatAddress,
  GuestMemoryError,
  OptionsError,
  PluginError,
  QueueConfigError,
  VirtkitError,
} from './errors.js';
export type { GuestBuffer, GuestRegionInit } from './memory.js';
export {
  GuestMemory,
  GuestRegion,
  guestAddressFromBigInt,
  guestAddressFromParts,
  isSafeRange,
  MAX_GUEST_ADDRESS,
} from './memory.js';
export type {
  BooleanOption,
  EnumOption,
  InferOptions,
  IntegerOption,
  OptionSpec,
  OptionsSchema,
  StringOption,
} from './options.js';
export { defineOptions, parseDeviceArgument, parseOptions } from './options.js';
export type { Segment } from './queue/chain.js';
export { ChainReader, ChainWriter, DescriptorChain } from './queue/chain.js';
export { createDeviceQueue } from './queue/factory.js';
export type { PackedDescriptor } from './queue/packed.js';
export { PackedDeviceQueue } from './queue/packed.js';
export type { PackedDriverQueueOptions } from './queue/packed-driver.js';
export { PackedDriverQueue } from './queue/packed-driver.js';
export { SplitDeviceQueue } from './queue/split.js';
export type { SplitDriverQueueOptions } from './queue/split-driver.js';
export { SplitDriverQueue } from './queue/split-driver.js';
export type {
  DeviceQueue,
  DeviceQueueOptions,
  DriverQueue,
  DriverQueueOptions,
  QueuePosition,
  QueueSetup,
  RingLayout,
  UsedBuffer,
} from './queue/types.js';
export type { RegistryEvents } from './registry.js';
export { CORE_VERSION, DeviceRegistry } from './registry.js';
export { ViolationCounter } from './violations.js';
