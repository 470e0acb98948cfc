/**
 * The device-status state machine and feature negotiation (virtio 1.2 §2.1, §2.2, §3.1), queue
 * setup and activation. A transport (MMIO, PCI, vhost-user, the test harness) translates register
 * accesses into calls on a {@link DeviceController}; the device itself never sees status bits.
 */

import { EventEmitter } from 'eventemitter3';
import { DeviceStatus, Feature, featureBit } from './constants.js';
import {
  type ActivationContext,
  checkDeviceShape,
  type InterruptSink,
  type VirtioDevice,
} from './device.js';
import {
  PluginError,
  type ProtocolViolation,
  QueueConfigError,
  type ViolationCode,
} from './errors.js';
import { type GuestMemory, guestAddressFromParts } from './memory.js';
import { createDeviceQueue } from './queue/factory.js';
import { isValidSplitQueueSize } from './queue/ring-util.js';
import type { DeviceQueue, QueuePosition, RingLayout } from './queue/types.js';
import { ViolationCounter } from './violations.js';

const VERSION_1 = featureBit(Feature.VERSION_1);
const RING_PACKED = featureBit(Feature.RING_PACKED);
const DRIVER_SETTABLE =
  DeviceStatus.ACKNOWLEDGE |
  DeviceStatus.DRIVER |
  DeviceStatus.FEATURES_OK |
  DeviceStatus.DRIVER_OK |
  DeviceStatus.FAILED;

/** Activation state of a device (a discriminated union on `state`). */
export type Activation =
  | { readonly state: 'inactive' }
  | { readonly state: 'activating' }
  | { readonly state: 'active'; readonly queues: readonly (DeviceQueue | undefined)[] }
  | { readonly state: 'failed'; readonly reason: string }
  | { readonly state: 'resetting' };

/** Typed events of a {@link DeviceController}. */
export interface DeviceEvents {
  /** The status byte changed. */
  status: [status: number, previous: number];
  /** The device was activated with these negotiated features. */
  activate: [features: bigint];
  /** A reset completed (status is 0 again). */
  reset: [];
  /** The guest violated the protocol (counted in {@link DeviceController.violations}). */
  violation: [violation: ProtocolViolation];
  /** DEVICE_NEEDS_RESET was set. */
  'needs-reset': [reason: string];
  /** The device changed its configuration space; the generation was bumped. */
  'config-change': [generation: number];
}

/** The per-queue registers a transport exposes (§4.1.4.3 common config, §4.2.2 MMIO). */
export interface QueueRegisters {
  /** Largest size the device supports (QueueNumMax / queue_size at reset). */
  readonly maxSize: number;
  /** Size the driver chose (the maximum until it writes one). */
  size: number;
  /** The driver enabled the queue (QueueReady / queue_enable). */
  ready: boolean;
  /** Low and high 32-bit halves of the three ring areas, as the driver wrote them. */
  readonly desc: [low: number, high: number];
  /** Driver area (split: available ring; packed: driver event suppression). */
  readonly driver: [low: number, high: number];
  /** Device area (split: used ring; packed: device event suppression). */
  readonly device: [low: number, high: number];
}

/** Which ring area a queue address register sets. */
export type QueueArea = 'desc' | 'driver' | 'device';

/** Options of a {@link DeviceController}. */
export interface DeviceControllerOptions {
  /** Guest memory the device's rings and buffers live in. */
  readonly memory: GuestMemory;
  /** Where interrupts go (the transport). */
  readonly interrupt: InterruptSink;
  /**
   * True for transports that only speak the modern interface (virtio-mmio v2, modern virtio-pci,
   * vhost-user): FEATURES_OK is refused unless the driver accepted VERSION_1 (§6.1).
   */
  readonly requireVersion1?: boolean;
  /** Restores ring positions at activation (vhost-user SET_VRING_BASE, snapshots). */
  readonly queuePosition?: (queueIndex: number) => QueuePosition | undefined;
  /** Diagnostic messages (default: dropped). */
  readonly log?: (message: string) => void;
}

/**
 * Core's side of one virtio device: status, features, queues, config space, activation.
 *
 * @example
 * ```ts
 * const controller = new DeviceController(device, { memory, interrupt, requireVersion1: true });
 * controller.writeStatus(DeviceStatus.ACKNOWLEDGE);
 * ```
 */
export class DeviceController {
  /** The device this controller runs. */
  readonly device: VirtioDevice;
  /** Guest memory (from the options). */
  readonly memory: GuestMemory;
  /** Typed lifecycle events (see {@link DeviceEvents}). */
  readonly events = new EventEmitter<DeviceEvents>();
  /** Guest protocol violations seen so far, by code. */
  readonly violations = new ViolationCounter();

  readonly #interrupt: InterruptSink;
  readonly #requireVersion1: boolean;
  readonly #queuePosition: DeviceControllerOptions['queuePosition'];
  readonly #log: (message: string) => void;
  readonly #offered: bigint;
  readonly #queues: QueueRegisters[];
  #status = 0;
  #driverFeatures = 0n;
  #negotiated = 0n;
  #generation = 0;
  #activation: Activation = { state: 'inactive' };
  #pendingNotify = new Set<number>();
  /** Status writes and resets whose effects have not settled yet (see {@link settled}). */
  readonly #inFlight = new Set<Promise<void>>();

  constructor(device: VirtioDevice, options: DeviceControllerOptions) {
    const problem = checkDeviceShape(device);
    if (problem) throw new PluginError('PLUGIN_INVALID', `device has ${problem}`);
    this.device = device;
    this.memory = options.memory;
    this.#interrupt = options.interrupt;
    this.#requireVersion1 = options.requireVersion1 ?? true;
    this.#queuePosition = options.queuePosition;
    this.#log = options.log ?? (() => {});
    this.#offered = BigInt.asUintN(64, device.features) | VERSION_1;
    this.#queues = device.queues.map((spec) => ({
      maxSize: spec.maxSize,
      size: spec.maxSize,
      ready: false,
      desc: [0, 0],
      driver: [0, 0],
      device: [0, 0],
    }));
    device.config?.onChange(() => this.#configChanged());
  }

  /** The device status byte (§2.1). Stays non-zero while a reset is settling. */
  get status(): number {
    return this.#status;
  }
  /** Features the device offers (VERSION_1 included). */
  get offeredFeatures(): bigint {
    return this.#offered;
  }
  /** Features the driver has written so far (already masked to the offered ones). */
  get driverFeatures(): bigint {
    return this.#driverFeatures;
  }
  /** Features in force: the driver's set once FEATURES_OK was accepted, else 0. */
  get negotiatedFeatures(): bigint {
    return this.#negotiated;
  }
  /** Ring layout in force (packed if RING_PACKED was negotiated). */
  get ringLayout(): RingLayout {
    return this.#negotiated & RING_PACKED ? 'packed' : 'split';
  }
  /** Configuration generation (§2.5.1); bumped on each device change to the config space. */
  get configGeneration(): number {
    return this.#generation;
  }
  /** Number of queues the device declared. */
  get numQueues(): number {
    return this.#queues.length;
  }
  /** Where the device is in its activation lifecycle. */
  get activation(): Activation {
    return this.#activation;
  }

  /** A 32-bit page of the offered features (§4.1.4.3 device_feature_select); pages >= 2 read 0. */
  deviceFeaturesPage(select: number): number {
    if (select !== 0 && select !== 1) return 0;
    return Number(BigInt.asUintN(32, this.#offered >> BigInt(32 * select)));
  }

  /** A 32-bit page of the driver's features as written so far. */
  driverFeaturesPage(select: number): number {
    if (select !== 0 && select !== 1) return 0;
    return Number(BigInt.asUintN(32, this.#driverFeatures >> BigInt(32 * select)));
  }

  /**
   * The driver writes a 32-bit page of accepted features. Bits the device did not offer are
   * dropped; pages beyond 1 and writes after FEATURES_OK are ignored and counted.
   */
  writeDriverFeaturesPage(select: number, value: number): void {
    if (this.#status & DeviceStatus.FEATURES_OK || this.#activation.state === 'resetting') {
      this.#violation(
        'FEATURES_AFTER_FEATURES_OK',
        'driver wrote features after FEATURES_OK',
        false,
      );
      return;
    }
    if (select !== 0 && select !== 1) {
      if (value !== 0) {
        this.#violation(
          'REGISTER_ACCESS_INVALID',
          `driver accepted features in page ${select}, which has none`,
          false,
        );
      }
      return;
    }
    const shift = BigInt(32 * select);
    const mask = 0xffff_ffffn << shift;
    const page = BigInt(value >>> 0) << shift;
    this.#driverFeatures = ((this.#driverFeatures & ~mask) | page) & this.#offered;
  }

  /** Sets all driver features at once (vhost-user SET_FEATURES, the test harness). */
  writeDriverFeatures(features: bigint): void {
    this.writeDriverFeaturesPage(0, Number(BigInt.asUintN(32, features)));
    this.writeDriverFeaturesPage(1, Number(BigInt.asUintN(32, features >> 32n)));
  }

  /**
   * The driver writes the status byte (§2.1, §3.1.1). 0 resets; otherwise bits may only be added,
   * in order ACKNOWLEDGE → DRIVER → FEATURES_OK → DRIVER_OK. FEATURES_OK is kept only if the
   * feature set is acceptable (the driver reads it back); DRIVER_OK activates the device.
   * Returns a promise that settles when a reset or activation triggered by this write completes.
   */
  writeStatus(value: number): Promise<void> {
    return this.#track(this.#applyStatus(value & 0xff));
  }

  /**
   * Resolves when every status write and reset so far has settled (a reset or activation that
   * the device made asynchronous). Never rejects. A transport whose driver does not poll status
   * after writing it (Linux's virtio-mmio driver writes 0 and goes on) lets the VMM await this
   * before resuming the vCPU that wrote.
   */
  settled(): Promise<void> {
    return Promise.allSettled([...this.#inFlight]).then(() => undefined);
  }

  #track(result: Promise<void>): Promise<void> {
    this.#inFlight.add(result);
    const forget = () => this.#inFlight.delete(result);
    result.then(forget, forget);
    return result;
  }

  #applyStatus(value: number): Promise<void> {
    if (value === 0) return this.#reset();
    if (this.#activation.state === 'resetting') {
      this.#violation('STATUS_ORDER', 'driver wrote status while the device was resetting', false);
      return Promise.resolve();
    }
    const current = this.#status;
    const requested = value & DRIVER_SETTABLE;
    if (current & ~requested & DRIVER_SETTABLE) {
      this.#violation(
        'STATUS_CLEARED_BITS',
        `driver cleared status bits 0x${(current & ~requested & DRIVER_SETTABLE).toString(16)} without a reset`,
        false,
      );
      return Promise.resolve();
    }
    const added = requested & ~current;
    if (added === 0) return Promise.resolve();
    if (current & DeviceStatus.FAILED) {
      // §2.1: FAILED means the driver gave up on the device; only a reset starts over.
      this.#violation('STATUS_ORDER', 'driver set status bits after FAILED without a reset', false);
      return Promise.resolve();
    }
    if (added & DeviceStatus.FAILED) {
      this.#setStatus(current | DeviceStatus.FAILED);
      this.#log('driver set FAILED: it gave up on the device');
      return Promise.resolve();
    }
    const has = (bit: number) => (requested & bit) !== 0;
    const order: [number, number, string][] = [
      [DeviceStatus.DRIVER, DeviceStatus.ACKNOWLEDGE, 'DRIVER before ACKNOWLEDGE'],
      [DeviceStatus.FEATURES_OK, DeviceStatus.DRIVER, 'FEATURES_OK before DRIVER'],
      [DeviceStatus.DRIVER_OK, DeviceStatus.FEATURES_OK, 'DRIVER_OK before FEATURES_OK'],
    ];
    for (const [bit, needs, what] of order) {
      if (added & bit && !has(needs)) {
        this.#violation('STATUS_ORDER', `driver set ${what}`, false);
        return Promise.resolve();
      }
    }
    let next = current | (added & (DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER));
    if (added & DeviceStatus.FEATURES_OK) {
      const problem = this.#checkFeatures(this.#driverFeatures);
      if (problem) {
        // §3.1.1: the device leaves FEATURES_OK clear; the driver reads it back and gives up.
        this.#violation('FEATURES_NOT_ACCEPTED', problem, false);
        this.#setStatus(next);
        return Promise.resolve();
      }
      this.#negotiated = this.#driverFeatures;
      next |= DeviceStatus.FEATURES_OK;
    }
    if (added & DeviceStatus.DRIVER_OK) {
      this.#setStatus(next | DeviceStatus.DRIVER_OK);
      return this.#activate();
    }
    this.#setStatus(next);
    return Promise.resolve();
  }

  #checkFeatures(features: bigint): string | undefined {
    if (this.#requireVersion1 && !(features & VERSION_1)) {
      return 'driver did not accept VERSION_1, which this transport requires';
    }
    try {
      return this.device.validateFeatures?.(features);
    } catch (error) {
      return `device could not check features: ${String(error)}`;
    }
  }

  /** Queue registers of queue `index`, or `undefined` if there is no such queue. */
  queue(index: number): Readonly<QueueRegisters> | undefined {
    return Number.isInteger(index) ? this.#queues[index] : undefined;
  }

  /**
   * The driver sets a queue's size. Refused (ignored and counted) for an unknown queue, while the
   * queue is enabled or the device is live, for 0 or more than the maximum, and, once a split ring
   * was negotiated, for a size that is not a power of two (§2.7).
   */
  writeQueueSize(index: number, size: number): boolean {
    const queue = this.#writableQueue(index);
    if (!queue) return false;
    if (!Number.isInteger(size) || size < 1 || size > queue.maxSize) {
      this.#violation(
        'QUEUE_SIZE_INVALID',
        `driver set queue ${index} size ${size}, maximum is ${queue.maxSize}`,
        false,
        index,
      );
      return false;
    }
    if (
      this.#status & DeviceStatus.FEATURES_OK &&
      this.ringLayout === 'split' &&
      (size & (size - 1)) !== 0
    ) {
      this.#violation(
        'QUEUE_SIZE_INVALID',
        `driver set split queue ${index} size ${size}, not a power of two`,
        false,
        index,
      );
      return false;
    }
    queue.size = size;
    return true;
  }

  /** The driver writes the low (`half` 0) or high (1) 32 bits of a ring area address. */
  writeQueueAddress(index: number, area: QueueArea, half: 0 | 1, value: number): boolean {
    const queue = this.#writableQueue(index);
    if (!queue) return false;
    queue[area][half] = value >>> 0;
    return true;
  }

  /**
   * Sets a whole 64-bit ring address (vhost-user, harness). Give addresses that come from a guest
   * or another process as a bigint: it is split exactly, and one beyond 2^53 makes activation
   * fail. A number that is not a non-negative safe integer cannot be an exact address either, and
   * is stored as one that activation refuses, never rounded.
   */
  writeQueueAddress64(index: number, area: QueueArea, address: number | bigint): boolean {
    let low = 0;
    let high = 0xffff_ffff; // refused at activation: far beyond 2^53
    if (typeof address === 'bigint') {
      if (address >= 0n && address <= 0xffff_ffff_ffff_ffffn) {
        low = Number(address & 0xffff_ffffn);
        high = Number(address >> 32n);
      }
    } else if (Number.isSafeInteger(address) && address >= 0) {
      low = address % 0x1_0000_0000;
      high = Math.floor(address / 0x1_0000_0000);
    }
    return (
      this.writeQueueAddress(index, area, 0, low) && this.writeQueueAddress(index, area, 1, high)
    );
  }

  /**
   * The driver enables (or, before DRIVER_OK, disables) a queue. Writing 0 after the queue was
   * enabled is not allowed without VIRTIO_F_RING_RESET (§4.1.4.3.2) and is ignored and counted.
   */
  writeQueueReady(index: number, ready: boolean): boolean {
    const queue = this.#queueOrViolation(index);
    if (!queue) return false;
    if (this.#status & DeviceStatus.DRIVER_OK) {
      if (queue.ready !== ready) {
        this.#violation(
          'QUEUE_CONFIG_AFTER_DRIVER_OK',
          `driver changed queue ${index} enable after DRIVER_OK`,
          false,
          index,
        );
      }
      return false;
    }
    queue.ready = ready;
    return true;
  }

  #queueOrViolation(index: number): QueueRegisters | undefined {
    const queue = this.queue(index) as QueueRegisters | undefined;
    if (!queue)
      this.#violation(
        'QUEUE_INDEX_INVALID',
        `driver addressed queue ${index}, which does not exist`,
        false,
      );
    return queue;
  }

  #writableQueue(index: number): QueueRegisters | undefined {
    const queue = this.#queueOrViolation(index);
    if (!queue) return undefined;
    if (this.#status & DeviceStatus.DRIVER_OK || queue.ready) {
      this.#violation(
        'QUEUE_CONFIG_AFTER_DRIVER_OK',
        `driver changed queue ${index} configuration after enabling it`,
        false,
        index,
      );
      return undefined;
    }
    return queue;
  }

  /**
   * Driver read of the configuration space. Out-of-range reads return zeros and are counted.
   */
  readConfig(offset: number, destination: Uint8Array): void {
    const config = this.device.config;
    if (!config?.read(offset, destination)) {
      destination.fill(0);
      this.#violation(
        'CONFIG_ACCESS_OUT_OF_RANGE',
        `driver read ${destination.length} config bytes at ${offset}, outside the ${config?.size ?? 0}-byte space`,
        false,
      );
    }
  }

  /** Driver write to the configuration space; read-only or out-of-range writes are dropped and counted. */
  writeConfig(offset: number, data: Uint8Array): void {
    const result = this.device.config?.write(offset, data) ?? 'out-of-range';
    if (result === 'out-of-range') {
      this.#violation(
        'CONFIG_ACCESS_OUT_OF_RANGE',
        `driver wrote ${data.length} config bytes at ${offset}, outside the config space`,
        false,
      );
    } else if (result === 'read-only') {
      this.#violation(
        'CONFIG_WRITE_READ_ONLY',
        `driver wrote read-only config bytes at ${offset}`,
        false,
      );
    }
  }

  /** The driver notified (kicked) queue `index`. */
  notify(index: number): void {
    if (!this.#queueOrViolation(index)) return;
    const activation = this.#activation;
    if (activation.state === 'active') {
      if (!activation.queues[index]) {
        this.#violation(
          'QUEUE_INDEX_INVALID',
          `driver notified queue ${index}, which it did not enable`,
          false,
          index,
        );
        return;
      }
      try {
        this.device.queueNotify(index);
      } catch (error) {
        this.#deviceFailure(
          `device failed handling a notification on queue ${index}: ${String(error)}`,
        );
      }
    } else if (activation.state === 'activating') {
      this.#pendingNotify.add(index);
    } else if (activation.state !== 'failed') {
      this.#violation(
        'NOTIFY_BEFORE_DRIVER_OK',
        `driver notified queue ${index} before DRIVER_OK`,
        false,
        index,
      );
    }
  }

  /**
   * Resets the device (driver wrote 0, or the VMM tears it down). Queues are detached at once so
   * no completion reaches a reset ring; status reads stay non-zero until the device's own reset
   * settles (§4.1.4.3.2).
   */
  reset(): Promise<void> {
    return this.#track(this.#reset());
  }

  #reset(): Promise<void> {
    if (this.#activation.state === 'resetting') return this.#resetting ?? Promise.resolve();
    const previous = this.#activation;
    if (previous.state === 'active') for (const queue of previous.queues) queue?.detach();
    this.#activation = { state: 'resetting' };
    this.#pendingNotify.clear();
    const finish = () => {
      this.#resetting = undefined;
      this.#driverFeatures = 0n;
      this.#negotiated = 0n;
      for (const queue of this.#queues) {
        queue.size = queue.maxSize;
        queue.ready = false;
        queue.desc.fill(0);
        queue.driver.fill(0);
        queue.device.fill(0);
      }
      this.#activation = { state: 'inactive' };
      this.#setStatus(0);
      this.events.emit('reset');
    };
    let result: void | Promise<void> | null = null;
    try {
      result = previous.state === 'inactive' ? undefined : this.device.reset();
    } catch (error) {
      this.#log(`device reset failed: ${String(error)}`);
    }
    if (result instanceof Promise) {
      this.#resetting = result.then(finish, (error: unknown) => {
        this.#log(`device reset failed: ${String(error)}`);
        finish();
      });
      return this.#resetting;
    }
    finish();
    return Promise.resolve();
  }
  #resetting: Promise<void> | undefined;

  /**
   * Sets DEVICE_NEEDS_RESET (§2.1.2) and, if the driver is live, sends a configuration change
   * notification so it notices. Used for guest protocol violations and device failures.
   */
  requestReset(reason: string): void {
    if (this.#status & DeviceStatus.DEVICE_NEEDS_RESET || this.#status === 0) return;
    this.#setStatus(this.#status | DeviceStatus.DEVICE_NEEDS_RESET);
    this.#log(`device needs reset: ${reason}`);
    this.events.emit('needs-reset', reason);
    if (this.#status & DeviceStatus.DRIVER_OK) this.#interrupt.signalConfig();
  }

  #activate(): Promise<void> {
    const layout = this.ringLayout;
    const eventIdx = (this.#negotiated & featureBit(Feature.RING_EVENT_IDX)) !== 0n;
    const indirect = (this.#negotiated & featureBit(Feature.RING_INDIRECT_DESC)) !== 0n;
    const queues: (DeviceQueue | undefined)[] = [];
    for (let index = 0; index < this.#queues.length; index++) {
      const registers = this.#queues[index]!;
      if (!registers.ready) {
        queues.push(undefined);
        continue;
      }
      if (layout === 'split' && !isValidSplitQueueSize(registers.size)) {
        // Possible when the driver set the size before FEATURES_OK fixed the layout.
        return this.#activationFailed(
          'QUEUE_SIZE_INVALID',
          `queue ${index}: split queue size ${registers.size} is not a power of two`,
          index,
        );
      }
      const descAddr = guestAddressFromParts(...registers.desc);
      const driverAddr = guestAddressFromParts(...registers.driver);
      const deviceAddr = guestAddressFromParts(...registers.device);
      if (descAddr === undefined || driverAddr === undefined || deviceAddr === undefined) {
        return this.#activationFailed(
          'QUEUE_ADDRESS_INVALID',
          `queue ${index} ring address does not fit in guest memory`,
          index,
        );
      }
      try {
        const position = this.#queuePosition?.(index);
        queues.push(
          createDeviceQueue(
            layout,
            { index, size: registers.size, descAddr, driverAddr, deviceAddr, eventIdx, indirect },
            {
              memory: this.memory,
              onViolation: (violation) => this.#reportViolation(violation),
              ...(position ? { position } : {}),
            },
          ),
        );
      } catch (error) {
        if (error instanceof QueueConfigError) {
          return this.#activationFailed(
            'QUEUE_ADDRESS_INVALID',
            `queue ${index}: ${error.message}`,
            index,
          );
        }
        throw error;
      }
    }
    const context: ActivationContext = {
      memory: this.memory,
      queues,
      features: this.#negotiated,
      signalUsed: (queueIndex) => {
        // Allowed while activating too: a device may complete buffers inside activate().
        const state = this.#activation.state;
        if (state === 'active' || state === 'activating') this.#interrupt.signalUsed(queueIndex);
      },
      reportViolation: (violation) => this.#reportViolation(violation),
    };
    this.#activation = { state: 'activating' };
    const done = () => {
      if (this.#activation.state !== 'activating') return;
      this.#activation = { state: 'active', queues };
      this.events.emit('activate', this.#negotiated);
      const pending = [...this.#pendingNotify];
      this.#pendingNotify.clear();
      for (const index of pending) this.notify(index);
    };
    let result: void | Promise<void> | null = null;
    try {
      result = this.device.activate(context);
    } catch (error) {
      this.#deviceFailure(`device activation failed: ${String(error)}`);
      return Promise.resolve();
    }
    if (result instanceof Promise) {
      return result.then(done, (error: unknown) =>
        this.#deviceFailure(`device activation failed: ${String(error)}`),
      );
    }
    done();
    return Promise.resolve();
  }

  #activationFailed(code: ViolationCode, message: string, queue: number): Promise<void> {
    this.#activation = { state: 'failed', reason: message };
    this.#violation(code, message, true, queue);
    return Promise.resolve();
  }

  #deviceFailure(reason: string): void {
    if (this.#activation.state === 'resetting' || this.#activation.state === 'inactive') return;
    this.#activation = { state: 'failed', reason };
    this.requestReset(reason);
  }

  #reportViolation(violation: ProtocolViolation): void {
    this.violations.record(violation);
    // Violations are reported from inside ring processing: a throwing listener (a host bug) must
    // not unwind the device's loop or the transport's register access.
    try {
      this.events.emit('violation', violation);
    } catch (error) {
      this.#log(`a 'violation' listener threw: ${String(error)}`);
    }
    if (violation.needsReset) this.requestReset(violation.message);
  }

  #violation(code: ViolationCode, message: string, needsReset: boolean, queue?: number): void {
    this.#reportViolation(
      queue === undefined ? { code, message, needsReset } : { code, message, needsReset, queue },
    );
  }

  #setStatus(status: number): void {
    const previous = this.#status;
    if (previous === status) return;
    this.#status = status;
    this.events.emit('status', status, previous);
  }

  #configChanged(): void {
    this.#generation = (this.#generation + 1) >>> 0;
    this.events.emit('config-change', this.#generation);
    if (this.#status & DeviceStatus.DRIVER_OK) this.#interrupt.signalConfig();
  }
}
