/**
 * @virtkit/core/testing: test a device without a VM. An in-memory guest, driver-side queues, a
 * fake interrupt line and a driver that initializes a device like Linux does.
 *
 * @example
 * ```ts
 * import { TestDriver } from '@virtkit/core/testing';
 * const driver = await TestDriver.create(device);
 * const reply = await driver.send(0, { readable: [request], writable: [16] });
 * ```
 *
 * @packageDocumentation
 */

export type {
  TestDriverOptions,
  TestMemory,
  TestMemoryOptions,
  TestRequest,
  TestResponse,
} from './harness.js';
export { BumpAllocator, createTestMemory, FakeInterrupt, TestDriver } from './harness.js';
