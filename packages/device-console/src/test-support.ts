/**
 * Test helpers (not exported): an in-memory backend the tests steer by hand, and a guest console
 * driver on top of core's TestDriver that speaks the control protocol like Linux's
 * virtio_console.c.
 */

import { Feature, featureBit, type VirtioDevice } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import type { BackendHost, PortBackend, WriteResult } from './backends/types.js';
import {
  CONTROL_RECEIVE_QUEUE,
  CONTROL_TRANSMIT_QUEUE,
  ControlEvent,
  NO_PORT_ID,
  type ResizeLayout,
  receiveQueueIndex,
  transmitQueueIndex,
} from './constants.js';
import {
  type ConsoleSize,
  type ControlMessage,
  decodeControlMessage,
  decodeResize,
  encodeControlMessage,
} from './requests.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Bytes of a string, or the bytes themselves. */
export function bytes(data: string | Uint8Array): Uint8Array {
  return typeof data === 'string' ? encoder.encode(data) : data;
}

/** A backend the test drives: it records output and injects input and events. */
export class MemoryBackend implements PortBackend {
  host: BackendHost | undefined;
  readonly written: Uint8Array[] = [];
  readonly logs: string[] = [];
  readonly guestOpens: boolean[] = [];
  /** Input is resumed (the port asked for input). */
  flowing = false;
  connected: boolean;
  /** Unsent bytes at which `write` answers 'full' (default: never). */
  limit = Number.POSITIVE_INFINITY;
  buffered = 0;
  closed = false;
  readonly #size: ConsoleSize | undefined;

  constructor(options: { connected?: boolean; size?: ConsoleSize } = {}) {
    this.connected = options.connected ?? true;
    this.#size = options.size;
  }

  attach(host: BackendHost): void {
    this.host = {
      ...host,
      log: (message) => {
        this.logs.push(message);
        host.log(message);
      },
    };
    host.setConnected(this.connected);
    if (this.#size) host.resize(this.#size);
  }

  write(data: Uint8Array): WriteResult {
    if (!this.connected) return 'dropped';
    this.written.push(data);
    this.buffered += data.length;
    return this.buffered >= this.limit ? 'full' : 'accepted';
  }

  pauseInput(): void {
    this.flowing = false;
  }

  resumeInput(): void {
    this.flowing = true;
  }

  guestConnected(open: boolean): void {
    this.guestOpens.push(open);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** Everything the guest wrote, as text. */
  text(): string {
    return decoder.decode(Buffer.concat(this.written));
  }

  /** Host → guest input. */
  type(data: string | Uint8Array): void {
    this.host!.input(bytes(data));
  }

  /** The unsent data was written out. */
  drain(): void {
    this.buffered = 0;
    this.host!.drained();
  }

  setConnected(connected: boolean): void {
    this.connected = connected;
    this.host!.setConnected(connected);
  }

  resize(size: ConsoleSize): void {
    this.host!.resize(size);
  }
}

/** A ring configuration to run protocol tests over. */
export interface RingVariant {
  readonly layout: 'split' | 'packed';
  readonly eventIdx: boolean;
  readonly indirect: boolean;
}

/** Both layouts, with and without EVENT_IDX and INDIRECT_DESC. */
export const RING_VARIANTS: readonly RingVariant[] = (['split', 'packed'] as const).flatMap(
  (layout) =>
    [false, true].flatMap((eventIdx) =>
      [false, true].map((indirect) => ({ layout, eventIdx, indirect })),
    ),
);

/** Short name of a variant for test titles. */
export function variantName(v: RingVariant): string {
  return `${v.layout}${v.eventIdx ? '+event_idx' : ''}${v.indirect ? '+indirect' : ''}`;
}

/** What the guest knows about a port (Linux's `struct port`). */
export interface GuestPort {
  readonly id: number;
  console: boolean;
  name: string | undefined;
  hostConnected: boolean;
  size: ConsoleSize | undefined;
  removed: boolean;
}

/**
 * A guest console driver: core's TestDriver for the rings, plus the control protocol as Linux
 * runs it (fill the control receiveq, DEVICE_READY, PORT_READY per DEVICE_ADD, PORT_OPEN 1 for a
 * console port).
 */
export class GuestConsole {
  readonly driver: TestDriver;
  readonly ports = new Map<number, GuestPort>();
  /** Every control message received, in order. */
  readonly received: ControlMessage[] = [];
  readonly #layout: ResizeLayout;

  private constructor(driver: TestDriver, layout: ResizeLayout) {
    this.driver = driver;
    this.#layout = layout;
  }

  static async create(
    device: VirtioDevice,
    variant: RingVariant = { layout: 'split', eventIdx: true, indirect: true },
    options: { features?: bigint; resizeLayout?: ResizeLayout } = {},
  ): Promise<GuestConsole> {
    let features = options.features ?? (1n << 64n) - 1n;
    if (!variant.eventIdx) features &= ~featureBit(Feature.RING_EVENT_IDX);
    if (!variant.indirect) features &= ~featureBit(Feature.RING_INDIRECT_DESC);
    const driver = await TestDriver.create(device, { layout: variant.layout, features });
    return new GuestConsole(driver, options.resizeLayout ?? 'cols-rows');
  }

  get violations(): number {
    return this.driver.controller.violations.count();
  }

  /** Posts `count` receive buffers of `size` bytes on a queue and kicks. */
  postBuffers(queue: number, count: number, size: number): void {
    for (let i = 0; i < count; i++) this.driver.post(queue, { writable: [size] });
    this.driver.kick(queue);
  }

  /** Posts receive buffers for port `id`. */
  postReceive(id: number, count = 4, size = 64): void {
    this.postBuffers(receiveQueueIndex(id), count, size);
  }

  /** Collects what the device put into port `id`'s receive buffers. */
  async takeReceived(id: number): Promise<string> {
    const index = receiveQueueIndex(id);
    const parts: Uint8Array[] = [];
    for (const token of this.driver.collect(index)) {
      parts.push((await this.driver.wait(index, token)).written);
    }
    return decoder.decode(Buffer.concat(parts));
  }

  /** Writes to port `id` (its transmitq) and waits until the device returned the buffer. */
  async write(id: number, data: string | Uint8Array): Promise<void> {
    await this.driver.send(transmitQueueIndex(id), { readable: [bytes(data)] });
  }

  /** Places output on port `id` without waiting; returns the token. */
  postWrite(id: number, data: string | Uint8Array): number {
    const { token } = this.driver.post(transmitQueueIndex(id), { readable: [bytes(data)] });
    this.driver.kick(transmitQueueIndex(id));
    return token;
  }

  /** Tokens of transmit buffers the device returned on port `id`. */
  collectWritten(id: number): number[] {
    return this.driver.collect(transmitQueueIndex(id));
  }

  /** Sends a control message to the device. */
  async sendControl(id: number, event: number, value: number): Promise<void> {
    await this.driver.send(CONTROL_TRANSMIT_QUEUE, {
      readable: [encodeControlMessage(id, event, value)],
    });
  }

  /** Collects control messages the device sent, reposting a buffer for each (as Linux does). */
  async takeControl(): Promise<ControlMessage[]> {
    const out: ControlMessage[] = [];
    for (const token of this.driver.collect(CONTROL_RECEIVE_QUEUE)) {
      const { written } = await this.driver.wait(CONTROL_RECEIVE_QUEUE, token);
      this.driver.post(CONTROL_RECEIVE_QUEUE, { writable: [4096] });
      if (written.length < 8) continue; // a buffer the device refused (too short)
      const message = decodeControlMessage(written);
      out.push(message);
      this.received.push(message);
    }
    this.driver.kick(CONTROL_RECEIVE_QUEUE);
    return out;
  }

  /** Linux's probe with MULTIPORT: fill the control receiveq, then DEVICE_READY. */
  async probe(controlBuffers = 16): Promise<void> {
    this.postBuffers(CONTROL_RECEIVE_QUEUE, controlBuffers, 4096);
    await this.sendControl(NO_PORT_ID, ControlEvent.DEVICE_READY, 1);
    await this.settle();
  }

  /** Handles control messages the way Linux does until the device sends no more. */
  async settle(): Promise<void> {
    for (let messages = await this.takeControl(); messages.length > 0; ) {
      for (const message of messages) await this.#handle(message);
      messages = await this.takeControl();
    }
  }

  /** The guest opens (or closes) port `id` (open(2) on /dev/vportNpM). */
  async open(id: number, open = true): Promise<void> {
    await this.sendControl(id, ControlEvent.PORT_OPEN, open ? 1 : 0);
    await this.settle();
  }

  async #handle(message: ControlMessage): Promise<void> {
    const { id } = message;
    switch (message.event) {
      case ControlEvent.DEVICE_ADD: {
        const known = this.ports.get(id);
        if (known && !known.removed) {
          await this.sendControl(id, ControlEvent.PORT_READY, 1);
          return;
        }
        this.ports.set(id, {
          id,
          console: false,
          name: undefined,
          hostConnected: false,
          size: undefined,
          removed: false,
        });
        this.postReceive(id);
        await this.sendControl(id, ControlEvent.PORT_READY, 1);
        return;
      }
      case ControlEvent.DEVICE_REMOVE: {
        const port = this.ports.get(id);
        if (port) port.removed = true;
        return;
      }
      case ControlEvent.CONSOLE_PORT: {
        const port = this.ports.get(id);
        if (!port || message.value === 0 || port.console) return;
        port.console = true;
        // init_port_console: the console is open from the guest's side at once.
        await this.sendControl(id, ControlEvent.PORT_OPEN, 1);
        return;
      }
      case ControlEvent.RESIZE: {
        const port = this.ports.get(id);
        if (port?.console) port.size = decodeResize(message.payload, this.#layout);
        return;
      }
      case ControlEvent.PORT_OPEN: {
        const port = this.ports.get(id);
        if (port) port.hostConnected = message.value !== 0;
        return;
      }
      case ControlEvent.PORT_NAME: {
        const port = this.ports.get(id);
        if (port && port.name === undefined) port.name = decoder.decode(message.payload);
        return;
      }
    }
  }
}

/** Waits for pending I/O callbacks (stream events, `setImmediate` continuations). */
export function tick(times = 2): Promise<void> {
  return times <= 0
    ? Promise.resolve()
    : new Promise((resolve) => setImmediate(() => resolve(tick(times - 1))));
}

/** Waits until `condition` holds (polling I/O callbacks), or fails after `ms`. */
export async function until(condition: () => boolean, what: string, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}
