/**
 * What a network backend (TAP, stream socket, in-process pair) gives the device. The device
 * pulls received frames and pushes transmitted ones; readiness comes back through a
 * {@link NetBackendPort}. Pulling is what makes backpressure work: while the guest posts no
 * receive buffers the device stops pulling, and the backend stops reading its source (the kernel
 * queues or drops for a TAP; a socket is paused so the peer's writes block).
 */

/** Offloads the guest negotiated for frames it receives (GUEST_* features). */
export interface GuestOffloads {
  /** GUEST_CSUM: frames may arrive with a partial checksum. */
  readonly csum: boolean;
  /** GUEST_TSO4: TCPv4 segments may arrive coalesced. */
  readonly tso4: boolean;
  /** GUEST_TSO6: TCPv6 segments may arrive coalesced. */
  readonly tso6: boolean;
  /** GUEST_ECN: coalesced segments may carry ECN. */
  readonly ecn: boolean;
}

/** No receive offloads. */
export const NO_OFFLOADS: GuestOffloads = { csum: false, tso4: false, tso6: false, ecn: false };

/**
 * Result of {@link NetBackend.send}:
 * - `sent`: taken; send more.
 * - `congested`: taken, but send nothing more on this channel until
 *   {@link NetBackendPort.writable}.
 * - `again`: not taken; offer the same frame again after {@link NetBackendPort.writable}.
 * - `dropped`: discarded by the backend (link down); the device counts it.
 */
export type SendResult = 'sent' | 'congested' | 'again' | 'dropped';

/** Callbacks from a backend into the device. Backends call them asynchronously, never from inside one of their own methods. */
export interface NetBackendPort {
  /** Frames can be received on `channel` again (after {@link NetBackend.receive} returned null). */
  readable(channel: number): void;
  /** `channel` can take frames again (after `congested` or `again`). */
  writable(channel: number): void;
  /** The link went up or down (socket connected or lost). */
  link(up: boolean): void;
}

/** A host-side network backend. */
export interface NetBackend {
  /** What kind of backend this is, for messages. */
  readonly kind: string;
  /** Human-readable endpoint (`tap0`, `unix:/run/vm.sock`, `memory`). */
  readonly description: string;
  /**
   * True if frames carry a 12-byte `virtio_net_hdr` (the TAP `IFF_VNET_HDR` layout, which is the
   * same structure) so checksum and segmentation offloads can pass through. Backends without it
   * move plain Ethernet frames, and the device offers no offloads.
   */
  readonly vnetHeader: boolean;
  /**
   * Independent channels, each with its own receive and transmit path (a multiqueue TAP opens
   * one file per queue pair). With one channel and several queue pairs, the device steers
   * received frames to queues itself.
   */
  readonly channels: number;
  /** Current link state. */
  readonly linkUp: boolean;
  /** Starts delivering readiness callbacks to `port`. Called once, by the device. */
  attach(port: NetBackendPort): void;
  /** Sets what received frames may carry (TAP: `TUNSETOFFLOAD`). */
  setOffloads(offloads: GuestOffloads): void;
  /** How many channels the guest uses (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET); others get no frames. */
  setActiveChannels(count: number): void;
  /**
   * The next received frame on `channel` (with its virtio header first when {@link vnetHeader}),
   * or `null` when none is ready: then {@link NetBackendPort.readable} follows when one is. The
   * bytes stay valid until the next `receive` on the same channel.
   */
  receive(channel: number): Uint8Array | null;
  /** Transmits one frame given as pieces (with its virtio header first when {@link vnetHeader}). */
  send(channel: number, frame: readonly Uint8Array[]): SendResult;
  /** Releases the backend's resources (files, sockets). */
  close(): Promise<void>;
}
