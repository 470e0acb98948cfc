/**
 * Queue processing of an active console device: data queues (input into receive buffers, output
 * from transmit buffers) and, with MULTIPORT, the control protocol. Given the queues, a "signal
 * used queue" callback and a way to defer work; it knows nothing about event loops.
 */

import type { DescriptorChain, DeviceQueue, ProtocolViolation } from '@virtkit/core';
import {
  CONTROL_RECEIVE_QUEUE,
  CONTROL_TRANSMIT_QUEUE,
  type ConsoleViolationCode,
  ControlEvent,
  portOfQueue,
  type ResizeLayout,
  receiveQueueIndex,
  transmitQueueIndex,
} from './constants.js';
import type { PortChannel } from './port.js';
import {
  controlEventName,
  encodeControlMessage,
  encodePortName,
  encodeResize,
  readControlMessage,
} from './requests.js';

/** Bytes copied from one transmit chain per backend write. */
export const TRANSMIT_CHUNK = 64 * 1024;
/**
 * Bytes of guest output one processing run hands to backends before yielding (via `defer`), so a
 * guest with huge chains and a backend without backpressure cannot hold the event loop.
 */
export const TRANSMIT_BUDGET = 1024 * 1024;

/** What a {@link ConsoleHandler} needs from the device. */
export interface HandlerContext {
  /** The activated queues (undefined where the driver did not enable one). */
  readonly queues: readonly (DeviceQueue | undefined)[];
  /** The ports, by id (the device's live table). */
  readonly ports: ReadonlyMap<number, PortChannel>;
  /** VIRTIO_CONSOLE_F_MULTIPORT was negotiated. */
  readonly multiport: boolean;
  /** VIRTIO_CONSOLE_F_SIZE was negotiated. */
  readonly size: boolean;
  /** Field order of RESIZE messages. */
  readonly resizeLayout: ResizeLayout;
  /** Most device → driver control messages waiting for control receive buffers. */
  readonly controlLimit: number;
  signalUsed(queueIndex: number): void;
  reportViolation(violation: ProtocolViolation): void;
  log(message: string): void;
  /** Runs a task later (after other I/O callbacks). */
  defer(task: () => void): void;
}

/** Device-wide counters of a {@link ConsoleHandler}. */
export interface HandlerStats {
  /** Control messages dropped because the driver left too many without buffers. */
  controlDropped: number;
  /** Guest output discarded from queues of removed ports. */
  orphanBytes: number;
}

interface PendingControl {
  readonly port: number;
  readonly event: number;
  bytes: Uint8Array;
}

/**
 * The queue side of an active console device. Created at activation, detached at reset; a
 * detached handler ignores every call, so late backend callbacks never touch a reset ring.
 */
export class ConsoleHandler {
  readonly stats: HandlerStats;
  readonly #ctx: HandlerContext;
  #detached = false;
  /** The driver sent DEVICE_READY 1. */
  #driverReady = false;
  /** Device → driver control messages waiting for buffers, oldest first. */
  readonly #control: PendingControl[] = [];
  /** Ports removed since activation: their queues may still hold guest buffers. */
  readonly #removed = new Set<number>();

  constructor(context: HandlerContext, stats: HandlerStats) {
    this.#ctx = context;
    this.stats = stats;
  }

  /** Starts the device's side: without MULTIPORT, port 0 is live at once (the driver opens it). */
  start(): void {
    if (this.#ctx.multiport) return;
    const port = this.#ctx.ports.get(0);
    if (!port) return;
    port.status.announced = true;
    this.#setReady(port);
    // A driver without MULTIPORT cannot report open/close, so the port counts as open (as QEMU).
    this.#setGuestOpen(port, true);
  }

  /** Stops all processing; ports go back to "not announced" and "closed" (QEMU guest_reset). */
  detach(): void {
    if (this.#detached) return;
    this.#detached = true;
    this.#control.length = 0;
    for (const port of this.#ctx.ports.values()) {
      if (port.txReader) port.stats.outputDropped += port.txReader.remaining;
      port.txChain = undefined;
      port.txReader = undefined;
      port.status.announced = false;
      port.status.ready = false;
      port.pauseInput();
      this.#setGuestOpen(port, false);
    }
  }

  /** The driver notified queue `index`. */
  notify(index: number): void {
    if (this.#detached) return;
    if (index === CONTROL_TRANSMIT_QUEUE) {
      this.#processControl();
      return;
    }
    if (index === CONTROL_RECEIVE_QUEUE) {
      this.#flushControl();
      return;
    }
    const id = portOfQueue(index);
    if (id === undefined) return;
    const port = this.#ctx.ports.get(id);
    const isTransmit = index === transmitQueueIndex(id);
    if (!port?.status.announced) {
      if (isTransmit) this.#discardOrphan(index, id);
      // Receive buffers of unknown ports stay where they are: nothing will be written to them.
      return;
    }
    if (isTransmit) this.transmit(port);
    else this.updateInput(port);
  }

  /**
   * Moves waiting input into the guest's receive buffers, then asks the backend for more input
   * or for a pause: input flows only while the guest can take it.
   */
  updateInput(port: PortChannel): void {
    if (this.#detached) return;
    if (!this.#canReceive(port)) {
      port.pauseInput();
      return;
    }
    if (port.pendingBytes > 0) this.#deliver(port);
    if (port.pendingBytes === 0) port.resumeInput();
    else port.pauseInput();
  }

  /** Takes guest output from the port's transmit queue, as far as the backend lets it. */
  transmit(port: PortChannel): void {
    if (this.#detached || !port.status.announced) return;
    if (port.txBusy) {
      // A backend callback from inside a write (drained, disconnected): go round once more.
      port.txAgain = true;
      return;
    }
    const index = transmitQueueIndex(port.id);
    const queue = this.#ctx.queues[index];
    if (!queue) return;
    port.txBusy = true;
    try {
      do {
        port.txAgain = false;
        this.#transmitRun(port, queue, index);
      } while (port.txAgain && !this.#detached);
    } finally {
      port.txBusy = false;
    }
  }

  /** A port was added while the device is live: announce it if the driver is ready. */
  portAdded(port: PortChannel): void {
    if (this.#detached || !this.#ctx.multiport) return;
    this.#removed.delete(port.id);
    if (this.#driverReady) this.#announce(port);
  }

  /** A port was removed: tell the driver and give back the chain in progress. */
  portRemoved(port: PortChannel): void {
    if (this.#detached) return;
    this.#removed.add(port.id);
    const queue = this.#ctx.queues[transmitQueueIndex(port.id)];
    if (port.txChain && queue) {
      port.stats.outputDropped += port.txReader?.remaining ?? 0;
      queue.addUsed(port.txChain, 0);
      if (queue.publishUsed()) this.#ctx.signalUsed(transmitQueueIndex(port.id));
    }
    port.txChain = undefined;
    port.txReader = undefined;
    // Output already queued goes back now, before the driver hears of the removal, and kicks are
    // on again: transmit processing may have paused with them off (output blocked, budget).
    if (queue) this.#discardOrphan(transmitQueueIndex(port.id), port.id);
    if (this.#ctx.multiport && port.status.announced) {
      this.#send(
        port.id,
        ControlEvent.DEVICE_REMOVE,
        encodeControlMessage(port.id, ControlEvent.DEVICE_REMOVE, 0),
      );
    }
    port.status.announced = false;
    port.status.ready = false;
    this.#setGuestOpen(port, false);
  }

  /** The backend's host side opened or closed. */
  connectionChanged(port: PortChannel): void {
    if (this.#detached) return;
    if (this.#ctx.multiport && port.status.ready) {
      const value = port.status.hostConnected ? 1 : 0;
      this.#send(
        port.id,
        ControlEvent.PORT_OPEN,
        encodeControlMessage(port.id, ControlEvent.PORT_OPEN, value),
      );
    }
    // Output held back for a closed host side is discarded (and counted), as QEMU does.
    if (port.status.announced) this.transmit(port);
  }

  /** A console port's terminal changed size. */
  resized(port: PortChannel): void {
    if (this.#detached) return;
    if (this.#ctx.multiport && port.status.ready) this.#sendResize(port);
  }

  // ---- data queues ----

  #canReceive(port: PortChannel): boolean {
    return (
      port.status.announced &&
      port.status.ready &&
      port.status.guestOpen &&
      this.#ctx.queues[receiveQueueIndex(port.id)] !== undefined
    );
  }

  #deliver(port: PortChannel): void {
    const index = receiveQueueIndex(port.id);
    const queue = this.#ctx.queues[index]!;
    let used = false;
    while (port.pendingBytes > 0) {
      const chain = queue.pop();
      if (!chain) {
        // Ask for a kick when the guest posts buffers; if some arrived meanwhile, go on.
        if (queue.enableNotifications()) continue;
        break;
      }
      used = true;
      if (chain.readable.length > 0) {
        this.#violation(
          'CONSOLE_BUFFER_DIRECTION',
          `driver put a device-readable buffer in the receiveq of port ${port.id}`,
          index,
        );
      }
      if (chain.writableLength === 0) {
        this.#violation(
          'CONSOLE_BUFFER_SHORT',
          `driver put a receive buffer without writable bytes in the receiveq of port ${port.id}`,
          index,
        );
        queue.addUsed(chain, 0);
        continue;
      }
      const writer = chain.writer();
      let written = 0;
      while (writer.remaining > 0 && port.pending.length > 0) {
        const head = port.pending[0]!;
        const count = writer.writeSome(head);
        written += count;
        if (count < head.length) port.pending[0] = head.subarray(count);
        else port.pending.shift();
      }
      port.pendingBytes -= written;
      port.stats.bytesToGuest += written;
      queue.addUsed(chain, written);
    }
    if (used && queue.publishUsed()) this.#ctx.signalUsed(index);
  }

  #transmitRun(port: PortChannel, queue: DeviceQueue, index: number): void {
    let budget = TRANSMIT_BUDGET;
    let used = false;
    do {
      queue.disableNotifications();
      for (;;) {
        if (port.outputBlocked) break;
        if (budget <= 0) {
          // Yield to other I/O; the rest of the queue is taken on the next run.
          if (used && queue.publishUsed()) this.#ctx.signalUsed(index);
          this.#ctx.defer(() => this.transmit(port));
          return;
        }
        let chain = port.txChain;
        if (!chain) {
          chain = queue.pop() ?? undefined;
          if (!chain) break;
          if (chain.writable.length > 0) {
            this.#violation(
              'CONSOLE_BUFFER_DIRECTION',
              `driver put a device-writable buffer in the transmitq of port ${port.id}`,
              index,
            );
          }
          port.txChain = chain;
          port.txReader = chain.reader();
        }
        const reader = port.txReader!;
        while (reader.remaining > 0 && !port.outputBlocked && budget > 0) {
          const count = Math.min(reader.remaining, TRANSMIT_CHUNK, budget);
          budget -= count;
          if (!port.status.hostConnected || (port.backendFull && port.overflow === 'drop')) {
            // Nothing will take it: skip without copying (a chain may alias 4 GiB of memory).
            port.stats.outputDropped += reader.skip(count);
          } else {
            port.output(reader.readBytes(count));
          }
        }
        if (reader.remaining > 0) continue; // blocked or out of budget: checked at the top
        queue.addUsed(chain, 0);
        port.txChain = undefined;
        port.txReader = undefined;
        used = true;
      }
      if (used && queue.publishUsed()) this.#ctx.signalUsed(index);
      used = false;
      // While blocked, the guest's buffers wait in the ring; `drained` restarts processing.
      if (port.outputBlocked) return;
    } while (queue.enableNotifications());
  }

  #discardOrphan(index: number, id: number): void {
    const queue = this.#ctx.queues[index];
    if (!queue) return;
    const known = this.#removed.has(id);
    let used = false;
    do {
      queue.disableNotifications();
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        if (known) this.stats.orphanBytes += chain.readableLength;
        else {
          this.#violation(
            'CONSOLE_PORT_UNKNOWN',
            `driver wrote ${chain.readableLength} bytes to port ${id}, which was never announced`,
            index,
          );
        }
        queue.addUsed(chain, 0);
        used = true;
      }
      if (used && queue.publishUsed()) this.#ctx.signalUsed(index);
      used = false;
    } while (queue.enableNotifications());
  }

  // ---- control queues ----

  #processControl(): void {
    const queue = this.#ctx.queues[CONTROL_TRANSMIT_QUEUE];
    if (!queue) return;
    let used = false;
    do {
      queue.disableNotifications();
      for (let chain = queue.pop(); chain; chain = queue.pop()) {
        this.#handleControl(chain);
        queue.addUsed(chain, 0);
        used = true;
      }
      if (used && queue.publishUsed()) this.#ctx.signalUsed(CONTROL_TRANSMIT_QUEUE);
      used = false;
    } while (queue.enableNotifications() && !this.#detached);
    this.#flushControl();
  }

  #handleControl(chain: DescriptorChain): void {
    if (chain.writable.length > 0) {
      this.#violation(
        'CONSOLE_BUFFER_DIRECTION',
        'driver put a device-writable buffer in the control transmitq',
        CONTROL_TRANSMIT_QUEUE,
      );
    }
    const parsed = readControlMessage(chain);
    if (!parsed.ok) {
      this.#violation(
        'CONSOLE_CONTROL_SHORT',
        `driver sent a ${parsed.reason}`,
        CONTROL_TRANSMIT_QUEUE,
      );
      return;
    }
    const { id, event, value } = parsed.message;
    switch (event) {
      case ControlEvent.DEVICE_READY:
        if (value === 0) {
          this.#ctx.log('console driver reported that it failed to initialize (DEVICE_READY 0)');
          return;
        }
        this.#driverReady = true;
        for (const port of [...this.#ctx.ports.values()].sort((a, b) => a.id - b.id)) {
          if (!port.status.announced && !port.status.removed) this.#announce(port);
        }
        return;
      case ControlEvent.PORT_READY: {
        const port = this.#announcedPort(id, event);
        if (!port) return;
        if (value === 0) {
          this.#ctx.log(`console driver failed to add port ${id} (PORT_READY 0)`);
          return;
        }
        this.#portReady(port);
        return;
      }
      case ControlEvent.PORT_OPEN: {
        const port = this.#announcedPort(id, event);
        if (port) this.#setGuestOpen(port, value !== 0);
        return;
      }
      case ControlEvent.DEVICE_ADD:
      case ControlEvent.DEVICE_REMOVE:
      case ControlEvent.CONSOLE_PORT:
      case ControlEvent.RESIZE:
      case ControlEvent.PORT_NAME:
        this.#violation(
          'CONSOLE_CONTROL_EVENT',
          `driver sent ${controlEventName(event)}, which only the device sends`,
          CONTROL_TRANSMIT_QUEUE,
        );
        return;
      default:
        this.#violation(
          'CONSOLE_CONTROL_EVENT',
          `driver sent unknown control event ${event}`,
          CONTROL_TRANSMIT_QUEUE,
        );
    }
  }

  #announcedPort(id: number, event: number): PortChannel | undefined {
    const port = this.#ctx.ports.get(id);
    if (port?.status.announced) return port;
    this.#violation(
      'CONSOLE_PORT_UNKNOWN',
      `driver sent ${controlEventName(event)} for port ${id}, which was not announced`,
      CONTROL_TRANSMIT_QUEUE,
    );
    return undefined;
  }

  #announce(port: PortChannel): void {
    port.status.announced = true;
    this.#send(
      port.id,
      ControlEvent.DEVICE_ADD,
      encodeControlMessage(port.id, ControlEvent.DEVICE_ADD, 1),
    );
  }

  /** PORT_READY: tell the driver what kind of port it is, its name and the host side's state. */
  #portReady(port: PortChannel): void {
    if (port.console) {
      this.#send(
        port.id,
        ControlEvent.CONSOLE_PORT,
        encodeControlMessage(port.id, ControlEvent.CONSOLE_PORT, 1),
      );
      this.#sendResize(port);
    }
    if (port.name !== undefined) {
      this.#send(port.id, ControlEvent.PORT_NAME, encodePortName(port.id, port.name));
    }
    if (port.status.hostConnected) {
      this.#send(
        port.id,
        ControlEvent.PORT_OPEN,
        encodeControlMessage(port.id, ControlEvent.PORT_OPEN, 1),
      );
    }
    this.#setReady(port);
  }

  #sendResize(port: PortChannel): void {
    const size = port.status.size;
    // Linux applies RESIZE only with F_SIZE negotiated and only to console ports.
    if (!this.#ctx.size || !port.console || !size) return;
    const bytes = encodeResize(port.id, size, this.#ctx.resizeLayout);
    // Only the latest size matters: replace a RESIZE still waiting for a buffer.
    const waiting = this.#control.find(
      (m) => m.port === port.id && m.event === ControlEvent.RESIZE,
    );
    if (waiting) waiting.bytes = bytes;
    else this.#send(port.id, ControlEvent.RESIZE, bytes);
  }

  #send(port: number, event: number, bytes: Uint8Array): void {
    if (this.#control.length >= this.#ctx.controlLimit) {
      this.stats.controlDropped++;
      this.#ctx.log(
        `console: dropped ${controlEventName(event)} for port ${port}: the driver left ${this.#control.length} control messages without buffers`,
      );
      return;
    }
    this.#control.push({ port, event, bytes });
    this.#flushControl();
  }

  #flushControl(): void {
    if (this.#detached) return;
    const queue = this.#ctx.queues[CONTROL_RECEIVE_QUEUE];
    if (!queue) return;
    let used = false;
    while (this.#control.length > 0) {
      const chain = queue.pop();
      if (!chain) {
        if (queue.enableNotifications()) continue;
        break;
      }
      used = true;
      if (chain.readable.length > 0) {
        this.#violation(
          'CONSOLE_BUFFER_DIRECTION',
          'driver put a device-readable buffer in the control receiveq',
          CONTROL_RECEIVE_QUEUE,
        );
      }
      const message = this.#control[0]!;
      if (chain.writableLength < 8) {
        // Not even a header fits; keep the message for the next buffer.
        this.#violation(
          'CONSOLE_BUFFER_SHORT',
          `driver posted a ${chain.writableLength}-byte control buffer, shorter than a control message`,
          CONTROL_RECEIVE_QUEUE,
        );
        queue.addUsed(chain, 0);
        continue;
      }
      const written = chain.writer().writeSome(message.bytes);
      if (written < message.bytes.length) {
        this.#violation(
          'CONSOLE_BUFFER_SHORT',
          `driver posted a ${chain.writableLength}-byte control buffer for a ${message.bytes.length}-byte ${controlEventName(message.event)}; it was truncated`,
          CONTROL_RECEIVE_QUEUE,
        );
      }
      queue.addUsed(chain, written);
      this.#control.shift();
    }
    if (used && queue.publishUsed()) this.#ctx.signalUsed(CONTROL_RECEIVE_QUEUE);
  }

  // ---- port state ----

  #setReady(port: PortChannel): void {
    const first = !port.status.ready;
    port.status.ready = true;
    if (first) port.emit('ready');
    this.updateInput(port);
    // The guest may have queued output before the port was ready (or before a re-activation).
    this.transmit(port);
  }

  #setGuestOpen(port: PortChannel, open: boolean): void {
    if (port.status.guestOpen === open) return;
    port.status.guestOpen = open;
    port.guestConnected(open);
    port.emit(open ? 'guest-open' : 'guest-close');
    if (!this.#detached) this.updateInput(port);
  }

  #violation(code: ConsoleViolationCode, message: string, queue: number): void {
    this.#ctx.reportViolation({ code, message, queue, needsReset: false });
  }
}
