/**
 * A vhost-user front-end in TypeScript, for tests without QEMU: it owns "guest RAM" in a memfd
 * (mapped here, and by the back-end through the descriptor it sends), builds rings with core's
 * driver queues, rings the kick eventfds and waits on the call eventfds, like QEMU and the guest
 * driver together.
 */

import {
  type DriverQueue,
  Feature,
  featureBit,
  GuestMemory,
  PackedDriverQueue,
  type RingLayout,
  SplitDriverQueue,
  VirtkitError,
} from '@virtkit/core';
import { BumpAllocator } from '@virtkit/core/testing';
import {
  connectUnix,
  drainEventfd,
  eventfd,
  ftruncate,
  type MemoryMapping,
  memfdCreate,
  mmap,
  signalEventfd,
  socketpair,
  unixSocket,
  waitReadable,
} from '@virtkit/linux';
import type { VhostUserBackend } from '../backend.js';
import { Channel, closeQuietly } from '../channel.js';
import {
  FLAG_NEED_REPLY,
  FLAG_REPLY,
  Request,
  requestName,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VRING_NOFD_MASK,
} from '../constants.js';
import {
  configPayload,
  decodeConfig,
  decodeInflight,
  decodeU64,
  decodeVringState,
  encodeMessage,
  type InflightDescription,
  inflightPayload,
  type MemoryRegionDescription,
  type Message,
  memoryTablePayload,
  u64Payload,
  vringAddressPayload,
  vringStatePayload,
} from '../message.js';

/** Guest RAM of a {@link TestFrontend}. */
export interface FrontendGuestOptions {
  /** Bytes of RAM (default 4 MiB), split evenly over `regions`. */
  readonly size?: number;
  /** Memory regions (default 1); each is a slice of the same memfd at its own mmap offset. */
  readonly regions?: number;
  /** Guest-physical address of the first region (default 1 MiB, so addresses are not 0-based). */
  readonly base?: number;
}

/**
 * Guest RAM: one memfd mapped here, described as `regions` memory-table entries (guest-physical
 * regions 16 MiB apart, consecutive slices of the file).
 */
export class FrontendGuest {
  readonly fd: number;
  readonly mapping: MemoryMapping;
  readonly memory: GuestMemory;
  readonly regions: readonly MemoryRegionDescription[];
  readonly #allocators: BumpAllocator[];
  #turn = 0;

  constructor(options: FrontendGuestOptions = {}) {
    const count = options.regions ?? 1;
    const regionSize = Math.floor((options.size ?? 4 << 20) / count / 4096) * 4096;
    const base = options.base ?? 1 << 20;
    this.fd = memfdCreate('virtkit-test-guest');
    ftruncate(this.fd, regionSize * count);
    this.mapping = mmap({ fd: this.fd, length: regionSize * count });
    const regions: MemoryRegionDescription[] = [];
    const inits = [];
    for (let i = 0; i < count; i++) {
      const guestAddress = base + i * (16 << 20);
      regions.push({
        guestAddress: BigInt(guestAddress),
        size: BigInt(regionSize),
        userAddress: BigInt(this.mapping.address + i * regionSize),
        mmapOffset: BigInt(i * regionSize),
      });
      inits.push({
        guestAddress,
        buffer: this.mapping.buffer,
        byteOffset: i * regionSize,
        size: regionSize,
      });
    }
    this.regions = regions;
    this.memory = new GuestMemory(inits);
    this.#allocators = this.memory.regions.map((r) => new BumpAllocator(r.guestAddress, r.end));
  }

  /** Allocates guest memory, round-robin over the regions (rings from the first). */
  allocate(size: number, align = 8, region?: number): number {
    if (region !== undefined) return this.#allocators[region]!.allocate(size, align);
    for (let tries = 0; tries < this.#allocators.length; tries++) {
      const allocator = this.#allocators[this.#turn++ % this.#allocators.length]!;
      try {
        return allocator.allocate(size, align);
      } catch {
        // next region
      }
    }
    throw new VirtkitError('DRIVER', `test guest memory exhausted allocating ${size} bytes`);
  }

  /** The front-end ("QEMU") virtual address of guest-physical `address`. */
  userAddress(address: number): bigint {
    for (const region of this.regions) {
      const offset = BigInt(address) - region.guestAddress;
      if (offset >= 0n && offset < region.size) return region.userAddress + offset;
    }
    throw new VirtkitError('DRIVER', `guest address 0x${address.toString(16)} is not RAM`);
  }

  /** Unmaps and closes the memfd. */
  release(): void {
    this.mapping.unmap();
    closeQuietly(this.fd);
  }
}

/** Options of {@link TestFrontend.startQueue}. */
export interface FrontendQueueOptions {
  /** Default: packed if RING_PACKED was set with SET_FEATURES. */
  readonly layout?: RingLayout;
  /** Ring size (default 64). */
  readonly size?: number;
  /** Default: as negotiated with SET_FEATURES. Disagreeing with it makes a misbehaving driver. */
  readonly eventIdx?: boolean;
  /** Default: as negotiated with SET_FEATURES. */
  readonly indirect?: boolean;
  /** SET_VRING_BASE value (default: 0 for split, both wrap counters set for packed). */
  readonly base?: number;
  /** SET_VRING_NUM value to announce (default: the ring's size); a different one is a lie. */
  readonly num?: number;
  /** Send SET_VRING_ENABLE 1 after the kick (default true). */
  readonly enable?: boolean;
  /**
   * Continue this ring (its driver queue, eventfds and requests in flight) instead of making a
   * new one: what QEMU does when it reconnects to a restarted back-end.
   */
  readonly reuse?: FrontendQueue;
}

/** A completed request. */
export interface FrontendResponse {
  readonly len: number;
  /** The first `len` bytes of the writable buffers. */
  readonly written: Uint8Array;
}

/** One ring as the front-end and the guest driver see it. */
export class FrontendQueue {
  readonly index: number;
  readonly driver: DriverQueue<number>;
  readonly kickFd: number;
  readonly callFd: number;
  readonly #guest: FrontendGuest;
  readonly #writable = new Map<number, { addr: number; len: number }[]>();
  readonly #done = new Map<number, number>();
  #nextToken = 1;
  /** Call-eventfd signals seen. */
  calls = 0;

  constructor(index: number, driver: DriverQueue<number>, guest: FrontendGuest) {
    this.index = index;
    this.driver = driver;
    this.#guest = guest;
    this.kickFd = eventfd();
    this.callFd = eventfd();
  }

  /** The used index as the device last published it (split rings). */
  usedIndex(): number {
    return this.#guest.memory.readU16(this.driver.deviceAddr + 2);
  }

  /** Places a request (readable bytes, writable buffer sizes) without kicking; returns its token. */
  post(readable: readonly Uint8Array[], writable: readonly number[] = []): number {
    const memory = this.#guest.memory;
    const inSegments = readable.map((bytes) => {
      const addr = this.#guest.allocate(Math.max(bytes.length, 1));
      memory.write(addr, bytes);
      return { addr, len: bytes.length };
    });
    const outSegments = writable.map((len) => ({
      addr: this.#guest.allocate(Math.max(len, 1)),
      len,
    }));
    const token = this.#nextToken++;
    if (!this.driver.add(inSegments, outSegments, token)) {
      throw new VirtkitError('DRIVER', `queue ${this.index} is full`);
    }
    this.#writable.set(token, outSegments);
    return token;
  }

  /** Publishes posted requests and signals the kick eventfd if the device wants it (or `force`). */
  kick(force = false): boolean {
    const wants = this.driver.publish();
    if (wants || force) signalEventfd(this.kickFd);
    return wants;
  }

  /** Collects used buffers; returns their tokens. */
  collect(): number[] {
    const tokens: number[] = [];
    for (let used = this.driver.takeUsed(); used; used = this.driver.takeUsed()) {
      this.#done.set(used.token, used.len);
      tokens.push(used.token);
    }
    return tokens;
  }

  /** True if request `token` completed (collecting first). */
  completed(token: number): boolean {
    this.collect();
    return this.#done.has(token);
  }

  /** Waits for the call eventfd (or `ms` milliseconds); returns true if it was signalled. */
  async waitCall(ms = 2000): Promise<boolean> {
    if (drainEventfd(this.callFd) > 0) {
      this.calls++;
      return true;
    }
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(new Error('timeout')), ms);
    try {
      await waitReadable(this.callFd, { signal: abort.signal, ref: true });
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
    if (drainEventfd(this.callFd) > 0) this.calls++;
    return true;
  }

  /** Waits until request `token` completed, with interrupts; returns what the device wrote. */
  async wait(token: number, ms = 2000): Promise<FrontendResponse> {
    const deadline = Date.now() + ms;
    while (!this.completed(token)) {
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new VirtkitError(
          'DRIVER',
          `no completion of request ${token} on queue ${this.index} within ${ms} ms`,
        );
      }
      await this.waitCall(left);
    }
    const len = this.#done.get(token)!;
    this.#done.delete(token);
    const segments = this.#writable.get(token) ?? [];
    this.#writable.delete(token);
    const written = new Uint8Array(len);
    let offset = 0;
    for (const segment of segments) {
      if (offset >= len) break;
      const take = Math.min(segment.len, len - offset);
      this.#guest.memory.read(segment.addr, written.subarray(offset, offset + take));
      offset += take;
    }
    return { len, written };
  }

  /** Posts, kicks and waits. */
  async send(
    readable: readonly Uint8Array[],
    writable: readonly number[] = [],
    ms = 2000,
  ): Promise<FrontendResponse> {
    const token = this.post(readable, writable);
    this.kick();
    return this.wait(token, ms);
  }

  /** Closes the eventfds. */
  release(): void {
    closeQuietly(this.kickFd);
    closeQuietly(this.callFd);
  }
}

interface Pending {
  readonly request: number;
  readonly resolve: (message: Message) => void;
  readonly reject: (error: Error) => void;
}

/**
 * The front-end: a connection to a back-end, guest RAM, and helpers for each message.
 *
 * @example
 * ```ts
 * const frontend = TestFrontend.pair(backend);
 * await frontend.handshake();
 * const queue = await frontend.startQueue(0, { layout: 'split', eventIdx: true });
 * const reply = await queue.send([request], [512]);
 * ```
 */
export class TestFrontend {
  readonly guest: FrontendGuest;
  readonly channel: Channel;
  readonly queues: (FrontendQueue | undefined)[] = [];
  /** Features the back-end offered (after {@link handshake}). */
  offered = 0n;
  /** Protocol features in force (after {@link handshake}). */
  protocolFeatures = 0n;
  /** Features set with SET_FEATURES (after {@link handshake}). */
  features = 0n;
  readonly #pending: Pending[] = [];
  #closedError: Error | undefined;
  #isClosed = false;
  readonly #closedWaiters: (() => void)[] = [];

  constructor(fd: number, guest: FrontendGuest) {
    this.guest = guest;
    this.channel = new Channel(fd, {
      message: (message) => this.#onMessage(message),
      closed: (error) => this.#onClosed(error),
    });
  }

  /** A front-end on one end of a socketpair whose other end `backend` serves. */
  static pair(
    backend: VhostUserBackend,
    guest: FrontendGuestOptions | FrontendGuest = {},
  ): TestFrontend {
    const [ours, theirs] = socketpair({ nonBlocking: true });
    backend.serve(theirs);
    return new TestFrontend(
      ours,
      guest instanceof FrontendGuest ? guest : new FrontendGuest(guest),
    );
  }

  /** A front-end connected to a back-end listening on `path`. */
  static connect(path: string, guest: FrontendGuestOptions | FrontendGuest = {}): TestFrontend {
    const fd = unixSocket({ nonBlocking: true });
    try {
      connectUnix(fd, path);
    } catch (error) {
      closeQuietly(fd);
      throw error;
    }
    return new TestFrontend(fd, guest instanceof FrontendGuest ? guest : new FrontendGuest(guest));
  }

  /** True once the back-end hung up (or {@link close} was called). */
  get closed(): boolean {
    return this.#isClosed;
  }

  /** Why the connection closed, if it closed with an error. */
  get closedError(): Error | undefined {
    return this.#closedError;
  }

  /** Resolves when the connection closes (or after `ms`, resolving false). */
  whenClosed(ms = 2000): Promise<boolean> {
    if (this.#isClosed) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.#closedWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** Sends a message without waiting. */
  send(request: number, payload?: Uint8Array, fds: readonly number[] = [], flags = 0): void {
    this.channel.send(encodeMessage(request, flags, payload), fds);
  }

  /** Sends a message and waits for its reply (explicit reply, or REPLY_ACK with `needReply`). */
  request(
    request: number,
    payload?: Uint8Array,
    fds: readonly number[] = [],
    options: { needReply?: boolean; timeoutMs?: number } = {},
  ): Promise<Message> {
    if (this.#isClosed) return Promise.reject(new Error('connection closed'));
    return new Promise<Message>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no reply to ${requestName(request)}`)),
        options.timeoutMs ?? 2000,
      );
      this.#pending.push({
        request,
        resolve: (message) => {
          clearTimeout(timer);
          resolve(message);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.send(request, payload, fds, options.needReply ? FLAG_NEED_REPLY : 0);
    });
  }

  /** Sends with NEED_REPLY and returns the REPLY_ACK status (0 success). */
  async ack(request: number, payload?: Uint8Array, fds: readonly number[] = []): Promise<bigint> {
    return decodeU64(await this.request(request, payload, fds, { needReply: true }));
  }

  /** GET_FEATURES. */
  async getFeatures(): Promise<bigint> {
    return decodeU64(await this.request(Request.GET_FEATURES));
  }

  /** GET_PROTOCOL_FEATURES. */
  async getProtocolFeatures(): Promise<bigint> {
    return decodeU64(await this.request(Request.GET_PROTOCOL_FEATURES));
  }

  /** GET_QUEUE_NUM. */
  async getQueueNum(): Promise<number> {
    return Number(decodeU64(await this.request(Request.GET_QUEUE_NUM)));
  }

  /** GET_VRING_BASE: stops the ring; returns its base. */
  async getVringBase(index: number): Promise<number> {
    return decodeVringState(await this.request(Request.GET_VRING_BASE, vringStatePayload(index, 0)))
      .num;
  }

  /** GET_CONFIG of `size` bytes at `offset`; an empty result is the back-end's "failed". */
  async getConfig(offset: number, size: number): Promise<Uint8Array> {
    const reply = await this.request(
      Request.GET_CONFIG,
      configPayload(offset, 0, new Uint8Array(size)),
    );
    if (reply.payload.length === 0) return new Uint8Array(0);
    return decodeConfig(reply).data.slice();
  }

  /** GET_INFLIGHT_FD: the description and the area's descriptor (caller closes it). */
  async getInflight(
    numQueues: number,
    queueSize: number,
  ): Promise<{ description: InflightDescription; fd: number }> {
    const reply = await this.request(
      Request.GET_INFLIGHT_FD,
      inflightPayload({ mmapSize: 0n, mmapOffset: 0n, numQueues, queueSize }),
    );
    const fd = reply.fds.shift();
    if (fd === undefined)
      throw new VirtkitError('DRIVER', 'GET_INFLIGHT_FD reply carries no descriptor');
    return { description: decodeInflight(reply), fd };
  }

  /** SET_INFLIGHT_FD with REPLY_ACK. */
  setInflight(description: InflightDescription, fd: number): Promise<bigint> {
    return this.ack(Request.SET_INFLIGHT_FD, inflightPayload(description), [fd]);
  }

  /**
   * What QEMU does on connect and vhost start: features, protocol features (all offered, unless
   * `protocolFeatures` says otherwise), owner, the driver's features, the memory table.
   */
  async handshake(
    options: { features?: bigint; protocolFeatures?: bigint; layout?: RingLayout } = {},
  ): Promise<void> {
    this.offered = await this.getFeatures();
    if (this.offered & featureBit(VHOST_USER_F_PROTOCOL_FEATURES)) {
      const protocol = (await this.getProtocolFeatures()) & (options.protocolFeatures ?? ~0n);
      this.send(Request.SET_PROTOCOL_FEATURES, u64Payload(protocol));
      this.protocolFeatures = protocol;
    }
    this.send(Request.SET_OWNER);
    let features = (options.features ?? this.offered) & this.offered;
    if ((options.layout ?? 'split') === 'split') features &= ~featureBit(Feature.RING_PACKED);
    else features |= featureBit(Feature.RING_PACKED) & this.offered;
    await this.setFeatures(features);
    await this.setMemTable();
  }

  /** SET_FEATURES, with REPLY_ACK when negotiated. */
  async setFeatures(features: bigint): Promise<void> {
    this.features = features;
    await this.#maybeAck(Request.SET_FEATURES, u64Payload(features));
  }

  /** SET_MEM_TABLE with the guest's regions (one descriptor per region). */
  async setMemTable(
    regions: readonly MemoryRegionDescription[] = this.guest.regions,
  ): Promise<void> {
    await this.#maybeAck(
      Request.SET_MEM_TABLE,
      memoryTablePayload(regions),
      regions.map(() => this.guest.fd),
    );
  }

  /**
   * Sets up ring `index` as QEMU's vhost_virtqueue_start does: NUM, BASE, ADDR, KICK, CALL, then
   * ENABLE. Returns the ring.
   */
  async startQueue(index: number, options: FrontendQueueOptions = {}): Promise<FrontendQueue> {
    const has = (feature: number) => (this.features & featureBit(feature)) !== 0n;
    const layout = options.layout ?? (has(Feature.RING_PACKED) ? 'packed' : 'split');
    const size = options.size ?? 64;
    const queueOptions = {
      index,
      size,
      eventIdx: options.eventIdx ?? has(Feature.RING_EVENT_IDX),
      indirect: options.indirect ?? has(Feature.RING_INDIRECT_DESC),
      allocate: (bytes: number, align: number) => this.guest.allocate(bytes, align, 0),
    };
    const queue =
      options.reuse ??
      new FrontendQueue(
        index,
        layout === 'packed'
          ? new PackedDriverQueue<number>(this.guest.memory, queueOptions)
          : new SplitDriverQueue<number>(this.guest.memory, queueOptions),
        this.guest,
      );
    const driver = queue.driver;
    this.queues[index] = queue;
    const base = options.base ?? (layout === 'packed' ? 0x8000_8000 : 0);
    await this.#maybeAck(
      Request.SET_VRING_NUM,
      vringStatePayload(index, options.num ?? driver.size),
    );
    await this.#maybeAck(Request.SET_VRING_BASE, vringStatePayload(index, base));
    await this.#maybeAck(
      Request.SET_VRING_ADDR,
      vringAddressPayload({
        index,
        flags: 0,
        desc: this.guest.userAddress(driver.descAddr),
        used: this.guest.userAddress(driver.deviceAddr),
        avail: this.guest.userAddress(driver.driverAddr),
        log: 0n,
      }),
    );
    await this.#maybeAck(Request.SET_VRING_KICK, u64Payload(index), [queue.kickFd]);
    await this.#maybeAck(Request.SET_VRING_CALL, u64Payload(index), [queue.callFd]);
    if (options.enable ?? true) {
      await this.#maybeAck(Request.SET_VRING_ENABLE, vringStatePayload(index, 1));
    }
    return queue;
  }

  /** SET_VRING_KICK/CALL/ERR without a descriptor (the no-fd flag). */
  sendNoFd(request: number, index: number): void {
    this.send(request, u64Payload(BigInt(index) | BigInt(VRING_NOFD_MASK)));
  }

  /** Closes the connection (queues and guest RAM stay: {@link release} them). */
  close(): void {
    this.channel.close();
    this.#onClosed(undefined);
  }

  /** Closes the connection and the queues' eventfds (guest RAM stays: `guest.release()`). */
  release(): void {
    this.close();
    for (const queue of this.queues) queue?.release();
  }

  async #maybeAck(
    request: number,
    payload?: Uint8Array,
    fds: readonly number[] = [],
  ): Promise<void> {
    const replyAck = 1n << 3n;
    if (this.protocolFeatures & replyAck) {
      const status = await this.ack(request, payload, fds);
      if (status !== 0n)
        throw new VirtkitError('DRIVER', `${requestName(request)} failed (REPLY_ACK ${status})`);
    } else {
      this.send(request, payload, fds);
    }
  }

  #onMessage(message: Message): void {
    if (!(message.flags & FLAG_REPLY)) {
      // A back-end request on the main channel would be a back-end bug; drop it.
      for (const fd of message.fds) closeQuietly(fd);
      return;
    }
    const pending = this.#pending.shift();
    if (!pending) {
      for (const fd of message.fds) closeQuietly(fd);
      return;
    }
    if (pending.request !== message.request) {
      for (const fd of message.fds) closeQuietly(fd);
      pending.reject(
        new Error(
          `reply to ${requestName(message.request)} while waiting for ${requestName(pending.request)}`,
        ),
      );
      return;
    }
    pending.resolve(message);
  }

  #onClosed(error: Error | undefined): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#closedError = error;
    for (const pending of this.#pending.splice(0)) pending.reject(new Error('connection closed'));
    for (const wake of this.#closedWaiters.splice(0)) wake();
  }
}
