/**
 * Test harness for device authors: an in-memory guest, driver-side queues, a fake interrupt line
 * and a fake transport (the {@link TestDriver} drives a {@link DeviceController} the way Linux's
 * virtio core does), so a device can be tested in a few lines without a VM.
 */

import { DeviceStatus, Feature, featureBit } from '../constants.js';
import { DeviceController } from '../controller.js';
import type { InterruptSink, VirtioDevice } from '../device.js';
import { VirtkitError } from '../errors.js';
import { GuestMemory, type GuestRegionInit } from '../memory.js';
import type { Segment } from '../queue/chain.js';
import { PackedDriverQueue } from '../queue/packed-driver.js';
import { SplitDriverQueue } from '../queue/split-driver.js';
import type { DriverQueue, QueuePosition, RingLayout } from '../queue/types.js';

/** Hands out aligned guest addresses from a range, first come first served. */
export class BumpAllocator {
  #next: number;
  readonly #end: number;

  constructor(start: number, end: number) {
    this.#next = start;
    this.#end = end;
  }

  /** `size` bytes aligned to `align` (a power of two); throws when the range is exhausted. */
  allocate(size: number, align = 8): number {
    const address = Math.ceil(this.#next / align) * align;
    if (address + size > this.#end) {
      throw new VirtkitError('DRIVER', `test guest memory exhausted allocating ${size} bytes`);
    }
    this.#next = address + size;
    return address;
  }
}

/** Options of {@link createTestMemory}. */
export interface TestMemoryOptions {
  /** Bytes of guest RAM (default 16 MiB). */
  readonly size?: number;
  /** Split RAM into this many regions with a 64 KiB hole between each (default 1). */
  readonly regions?: number;
  /** Guest address of the first byte (default 0). */
  readonly base?: number;
  /** Back RAM with a SharedArrayBuffer (default false). */
  readonly shared?: boolean;
}

/** An in-memory guest: RAM regions and an allocator over them. */
export interface TestMemory {
  /** Guest RAM. */
  readonly memory: GuestMemory;
  /** Allocates from the regions in turn (rings from the first, buffers from any). */
  readonly allocators: readonly BumpAllocator[];
  /** Allocates `size` bytes aligned to `align` (default 8), regions in turn; throws when full. */
  allocate(size: number, align?: number): number;
}

/** Creates guest RAM for tests. */
export function createTestMemory(options: TestMemoryOptions = {}): TestMemory {
  const size = options.size ?? 16 << 20;
  const count = options.regions ?? 1;
  const regionSize = Math.floor(size / count / 4096) * 4096;
  const inits: GuestRegionInit[] = [];
  let address = options.base ?? 0;
  for (let i = 0; i < count; i++) {
    const buffer = options.shared ? new SharedArrayBuffer(regionSize) : new ArrayBuffer(regionSize);
    inits.push({ guestAddress: address, buffer });
    address += regionSize + 0x10000;
  }
  const memory = new GuestMemory(inits);
  const allocators = memory.regions.map((r) => new BumpAllocator(r.guestAddress, r.end));
  let turn = 0;
  return {
    memory,
    allocators,
    allocate(bytes, align = 8) {
      // Round-robin so multi-region tests spread buffers over every region.
      for (let tries = 0; tries < allocators.length; tries++) {
        const allocator = allocators[turn++ % allocators.length]!;
        try {
          return allocator.allocate(bytes, align);
        } catch {
          // try the next region
        }
      }
      throw new VirtkitError('DRIVER', `test guest memory exhausted allocating ${bytes} bytes`);
    },
  };
}

/** A fake interrupt line that records what the device signalled. */
export class FakeInterrupt implements InterruptSink {
  /** Used-buffer interrupts per queue index. */
  readonly used = new Map<number, number>();
  /** Configuration-change interrupts. */
  config = 0;
  #waiters = new Set<() => void>();

  signalUsed(queueIndex: number): void {
    this.used.set(queueIndex, (this.used.get(queueIndex) ?? 0) + 1);
    this.#wake();
  }

  signalConfig(): void {
    this.config++;
    this.#wake();
  }

  /** Used-buffer interrupts seen on `queueIndex`. */
  usedCount(queueIndex: number): number {
    return this.used.get(queueIndex) ?? 0;
  }

  /** Resolves on the next interrupt of any kind, or after `ms` milliseconds. */
  next(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        this.#waiters.delete(wake);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.#waiters.add(wake);
    });
  }

  #wake(): void {
    for (const wake of [...this.#waiters]) wake();
  }
}

/** A request to send on a queue: bytes the device reads, and sizes of buffers it writes. */
export interface TestRequest {
  /** Device-readable buffers (each becomes one segment). */
  readonly readable?: readonly Uint8Array[];
  /** Sizes of device-writable buffers (each becomes one segment). */
  readonly writable?: readonly number[];
}

/** What came back for a {@link TestRequest}. */
export interface TestResponse {
  /** Bytes the device reported writing. */
  readonly len: number;
  /** The first `len` bytes of the writable buffers, concatenated. */
  readonly written: Uint8Array;
}

/** Options of {@link TestDriver.create}. */
export interface TestDriverOptions {
  /** Ring layout to negotiate (default split). Packed needs the device to offer RING_PACKED. */
  readonly layout?: RingLayout;
  /**
   * Features the driver accepts, before masking with the offer (default: everything offered,
   * minus RING_PACKED unless `layout` is packed).
   */
  readonly features?: bigint;
  /** Queue sizes to use (default: each queue's maximum, capped at 256). */
  readonly queueSizes?: readonly number[];
  /** Guest RAM options. */
  readonly memory?: TestMemoryOptions;
  /** Stop after FEATURES_OK; call {@link TestDriver.start} to finish initialization. */
  readonly deferDriverOk?: boolean;
  /** Ring positions to hand the controller (as vhost-user SET_VRING_BASE would). */
  readonly queuePosition?: (queueIndex: number) => QueuePosition | undefined;
  /** How long {@link TestDriver.send} waits for a completion (default 5000 ms). */
  readonly timeoutMs?: number;
}

/**
 * A virtio driver for tests: it performs Linux's initialization sequence on a device (reset,
 * ACKNOWLEDGE, DRIVER, features, FEATURES_OK read-back, queue setup, DRIVER_OK) through a
 * {@link DeviceController}, then sends requests and collects completions.
 *
 * @example
 * ```ts
 * const driver = await TestDriver.create(myDevice);
 * const { written } = await driver.send(0, { readable: [request], writable: [512] });
 * ```
 */
export class TestDriver {
  /** The controller the driver initializes (status, features, queues, violations). */
  readonly controller: DeviceController;
  /** Guest RAM. */
  readonly memory: GuestMemory;
  /** Records the interrupts the device raised. */
  readonly interrupt: FakeInterrupt;
  /** The in-memory guest: RAM and its allocators. */
  readonly guest: TestMemory;
  /** Driver-side queues, by index (undefined until set up). */
  readonly queues: (DriverQueue<number> | undefined)[] = [];
  readonly #timeoutMs: number;
  readonly #options: TestDriverOptions;
  readonly #completed = new Map<number, { len: number }>();
  #nextToken = 1;

  private constructor(device: VirtioDevice, options: TestDriverOptions) {
    this.guest = createTestMemory(options.memory);
    this.memory = this.guest.memory;
    this.interrupt = new FakeInterrupt();
    this.#options = options;
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.controller = new DeviceController(device, {
      memory: this.memory,
      interrupt: this.interrupt,
      requireVersion1: true,
      ...(options.queuePosition ? { queuePosition: options.queuePosition } : {}),
    });
  }

  /** Creates a driver and initializes the device. */
  static async create(device: VirtioDevice, options: TestDriverOptions = {}): Promise<TestDriver> {
    const driver = new TestDriver(device, options);
    await driver.initialize();
    return driver;
  }

  /** The device's status byte. */
  get status(): number {
    return this.controller.status;
  }

  /**
   * Runs the initialization sequence (§3.1.1). Throws if the device refuses the features.
   * Called by {@link create}; call it again after {@link reset} to re-initialize.
   */
  async initialize(): Promise<void> {
    const c = this.controller;
    await c.writeStatus(0);
    await c.writeStatus(DeviceStatus.ACKNOWLEDGE);
    await c.writeStatus(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER);
    const offered = BigInt(c.deviceFeaturesPage(0)) | (BigInt(c.deviceFeaturesPage(1)) << 32n);
    const layout = this.#options.layout ?? 'split';
    let wanted = this.#options.features ?? offered;
    if (layout === 'split') wanted &= ~featureBit(Feature.RING_PACKED);
    else wanted |= featureBit(Feature.RING_PACKED);
    const accepted = wanted & offered;
    c.writeDriverFeaturesPage(0, Number(BigInt.asUintN(32, accepted)));
    c.writeDriverFeaturesPage(1, Number(BigInt.asUintN(32, accepted >> 32n)));
    const base = DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER;
    await c.writeStatus(base | DeviceStatus.FEATURES_OK);
    if (!(c.status & DeviceStatus.FEATURES_OK)) {
      await c.writeStatus(base | DeviceStatus.FAILED);
      throw new VirtkitError(
        'DRIVER',
        'device refused the features (FEATURES_OK did not read back)',
      );
    }
    if (layout === 'packed' && !(accepted & featureBit(Feature.RING_PACKED))) {
      throw new VirtkitError(
        'DRIVER',
        'packed layout requested but the device does not offer RING_PACKED',
      );
    }
    const eventIdx = (accepted & featureBit(Feature.RING_EVENT_IDX)) !== 0n;
    const indirect = (accepted & featureBit(Feature.RING_INDIRECT_DESC)) !== 0n;
    this.queues.length = 0;
    for (let index = 0; index < c.numQueues; index++) {
      const registers = c.queue(index)!;
      const size = this.#options.queueSizes?.[index] ?? Math.min(registers.maxSize, 256);
      const options = {
        index,
        size,
        eventIdx,
        indirect,
        allocate: (bytes: number, align: number) =>
          this.guest.allocators[0]!.allocate(bytes, align),
      };
      // The device starts where queuePosition says (vhost-user SET_VRING_BASE): so must we.
      const position = this.#options.queuePosition?.(index);
      const queue: DriverQueue<number> =
        layout === 'packed'
          ? new PackedDriverQueue<number>(this.memory, {
              ...options,
              ...(position ? { startPosition: position } : {}),
            })
          : new SplitDriverQueue<number>(this.memory, {
              ...options,
              ...(position ? { startIndex: splitStartIndex(index, position) } : {}),
            });
      c.writeQueueSize(index, size);
      c.writeQueueAddress64(index, 'desc', queue.descAddr);
      c.writeQueueAddress64(index, 'driver', queue.driverAddr);
      c.writeQueueAddress64(index, 'device', queue.deviceAddr);
      c.writeQueueReady(index, true);
      this.queues[index] = queue;
    }
    if (!this.#options.deferDriverOk) await this.start();
  }

  /** Sets DRIVER_OK (after `deferDriverOk`). */
  async start(): Promise<void> {
    await this.controller.writeStatus(
      DeviceStatus.ACKNOWLEDGE |
        DeviceStatus.DRIVER |
        DeviceStatus.FEATURES_OK |
        DeviceStatus.DRIVER_OK,
    );
  }

  /** Resets the device (status 0) and waits for the reset to settle. */
  async reset(): Promise<void> {
    await this.controller.writeStatus(0);
    this.#completed.clear();
  }

  /** Allocates a guest buffer holding `bytes` (or `size` zero bytes). */
  allocate(bytesOrSize: Uint8Array | number): Segment {
    const len = typeof bytesOrSize === 'number' ? bytesOrSize : bytesOrSize.length;
    const addr = this.guest.allocate(Math.max(len, 1), 8);
    if (typeof bytesOrSize !== 'number') this.memory.write(addr, bytesOrSize);
    return { addr, len };
  }

  /**
   * Places a request on queue `index` without waiting; returns its token. Call {@link kick}
   * (or {@link send}) to notify the device.
   */
  post(index: number, request: TestRequest): { token: number; writable: Segment[] } {
    const queue = this.#queue(index);
    const readable = (request.readable ?? []).map((bytes) => this.allocate(bytes));
    const writable = (request.writable ?? []).map((size) => this.allocate(size));
    const token = this.#nextToken++;
    if (!queue.add(readable, writable, token)) {
      throw new VirtkitError(
        'DRIVER',
        `queue ${index} has no room for a ${readable.length + writable.length}-segment buffer`,
      );
    }
    this.#writable.set(token, writable);
    return { token, writable };
  }
  readonly #writable = new Map<number, Segment[]>();

  /** Publishes posted buffers and notifies the device if it asked for notifications. */
  kick(index: number, force = false): boolean {
    const wants = this.#queue(index).publish();
    if (wants || force) this.controller.notify(index);
    return wants;
  }

  /** Collects every used buffer now on queue `index`; returns their tokens. */
  collect(index: number): number[] {
    const queue = this.#queue(index);
    const tokens: number[] = [];
    for (let used = queue.takeUsed(); used; used = queue.takeUsed()) {
      this.#completed.set(used.token, { len: used.len });
      tokens.push(used.token);
    }
    return tokens;
  }

  /** Waits until the buffer with `token` was used; returns what the device wrote. */
  async wait(index: number, token: number): Promise<TestResponse> {
    const deadline = Date.now() + this.#timeoutMs;
    for (;;) {
      this.collect(index);
      const done = this.#completed.get(token);
      if (done) {
        this.#completed.delete(token);
        const segments = this.#writable.get(token) ?? [];
        this.#writable.delete(token);
        const written = new Uint8Array(done.len);
        let offset = 0;
        for (const segment of segments) {
          if (offset >= done.len) break;
          const take = Math.min(segment.len, done.len - offset);
          this.memory.read(segment.addr, written.subarray(offset, offset + take));
          offset += take;
        }
        return { len: done.len, written };
      }
      if (this.controller.status & DeviceStatus.DEVICE_NEEDS_RESET) {
        // Fail at once with the reason instead of waiting for the timeout.
        const last = this.controller.violations.recent().at(-1);
        const reason =
          this.controller.activation.state === 'failed'
            ? this.controller.activation.reason
            : last?.message;
        throw new VirtkitError(
          'DRIVER',
          `device set DEVICE_NEEDS_RESET while queue ${index} waited: ${reason ?? 'no reason recorded'}`,
        );
      }
      if (Date.now() > deadline) {
        throw new VirtkitError(
          'DRIVER',
          `no completion on queue ${index} within ${this.#timeoutMs} ms`,
        );
      }
      await this.interrupt.next(2);
    }
  }

  /** Posts a request, kicks, and waits for its completion. */
  async send(index: number, request: TestRequest): Promise<TestResponse> {
    const { token } = this.post(index, request);
    this.kick(index);
    return this.wait(index, token);
  }

  /** Reads `length` bytes of configuration space at `offset`. */
  readConfig(offset: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    this.controller.readConfig(offset, out);
    return out;
  }

  #queue(index: number): DriverQueue<number> {
    const queue = this.queues[index];
    if (!queue) throw new VirtkitError('DRIVER', `queue ${index} is not set up`);
    return queue;
  }
}

/** The split driver's starting index for a device started at `position` with nothing in flight. */
function splitStartIndex(index: number, position: QueuePosition): number {
  if (position.nextAvail !== position.nextUsed) {
    throw new VirtkitError(
      'DRIVER',
      `queue ${index}: the test driver cannot start at position ${position.nextAvail}/${position.nextUsed}, which has buffers in flight`,
    );
  }
  return position.nextAvail;
}
