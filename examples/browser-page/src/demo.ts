import { DeviceRegistry, Feature, GuestMemory, type RingLayout } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { rngPlugin } from '@virtkit-examples/rng-device';
import { echoPlugin } from './echo.js';

/** What the guest-memory check found. */
export interface MemoryResult {
  /** Regions as `[guestAddress, size]`. */
  readonly regions: readonly (readonly [number, number])[];
  /** Backed by SharedArrayBuffer (a browser allows it only when cross-origin isolated). */
  readonly shared: boolean;
  /** Bytes written across the boundary between the two regions read back unchanged. */
  readonly roundTrip: boolean;
  /** How many zero-copy views the boundary-crossing range took (2: one per region). */
  readonly views: number;
}

/** One device driven over one ring layout. */
export interface DeviceRun {
  readonly device: string;
  readonly layout: RingLayout;
  /** Device status byte after initialization (0x0f: ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK). */
  readonly status: number;
  /** Negotiated features, hex. */
  readonly features: string;
  /** Names of the negotiated reserved feature bits. */
  readonly featureNames: readonly string[];
  /** Bytes offered to the device, per request. */
  readonly requested: readonly number[];
  /** Bytes the device wrote, per request. */
  readonly lengths: readonly number[];
  /** What the device wrote, hex, per request. */
  readonly hex: readonly string[];
  /** Guest protocol violations counted by core. */
  readonly violations: number;
  /** Guest RAM was a SharedArrayBuffer. */
  readonly sharedMemory: boolean;
}

/** Everything the page shows. */
export interface DemoResults {
  readonly memory: MemoryResult;
  readonly plugins: readonly string[];
  readonly rng: readonly DeviceRun[];
  readonly echo: readonly (DeviceRun & { readonly sent: string; readonly received: string })[];
}

/** Options of {@link runDemo}. */
export interface DemoOptions {
  /** Back guest RAM with SharedArrayBuffer (only where the host allows it). */
  readonly shared: boolean;
}

const LAYOUTS: readonly RingLayout[] = ['split', 'packed'];
const ECHO_MESSAGE = 'hello from a virtio device written in the page';
const RNG_MAX_BYTES = 32;

/**
 * Runs the demo: guest memory, the plugin registry, and the rng and echo devices driven by the
 * test driver over both ring layouts. Touches no DOM, so Node runs it too.
 */
export async function runDemo(options: DemoOptions): Promise<DemoResults> {
  const memory = checkGuestMemory(options.shared);

  const registry = new DeviceRegistry();
  registry.register(rngPlugin);
  registry.register(echoPlugin);

  const rng: DeviceRun[] = [];
  const echo: (DeviceRun & { sent: string; received: string })[] = [];
  for (const layout of LAYOUTS) {
    const device = await registry.create('rng', { maxBytes: RNG_MAX_BYTES });
    // Not shared: browsers' crypto.getRandomValues refuses views of a SharedArrayBuffer (Node
    // accepts them), and the rng example fills guest buffers in place.
    const driver = await TestDriver.create(device, { layout, memory: { size: 1 << 20 } });
    // Two buffers in one chain, then one buffer larger than maxBytes (the device caps it).
    const first = await driver.send(0, { writable: [16, 16] });
    const second = await driver.send(0, { writable: [64] });
    rng.push({
      ...describe('rng', layout, driver),
      requested: [32, 64],
      lengths: [first.len, second.len],
      hex: [toHex(first.written), toHex(second.written)],
    });

    const echoDevice = await registry.create('echo');
    const echoDriver = await TestDriver.create(echoDevice, {
      layout,
      memory: { size: 1 << 20, shared: options.shared },
    });
    const message = new TextEncoder().encode(`${ECHO_MESSAGE} (${layout} ring)`);
    // Scatter-gather on both sides: two readable and two writable segments of different sizes.
    const reply = await echoDriver.send(0, {
      readable: [message.subarray(0, 10), message.subarray(10)],
      writable: [7, message.length - 7],
    });
    echo.push({
      ...describe('echo', layout, echoDriver),
      requested: [message.length],
      lengths: [reply.len],
      hex: [toHex(reply.written)],
      sent: new TextDecoder().decode(message),
      received: new TextDecoder().decode(reply.written),
    });
  }
  return { memory, plugins: registry.names(), rng, echo };
}

/** Two adjacent regions; a write across their boundary must land in both and read back. */
function checkGuestMemory(shared: boolean): MemoryResult {
  const regionSize = 64 << 10;
  const buffer = () => (shared ? new SharedArrayBuffer(regionSize) : new ArrayBuffer(regionSize));
  const memory = new GuestMemory([
    { guestAddress: 0, buffer: buffer() },
    { guestAddress: regionSize, buffer: buffer() },
  ]);
  const address = regionSize - 8;
  const pattern = Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i);
  memory.write(address, pattern);
  const back = new Uint8Array(16);
  memory.read(address, back);
  return {
    regions: memory.regions.map((region) => [region.guestAddress, region.size] as const),
    shared: memory.regions.every((region) => isShared(region.bytes.buffer)),
    roundTrip: back.every((byte, i) => byte === pattern[i]),
    views: memory.views(address, 16).length,
  };
}

function describe(
  device: string,
  layout: RingLayout,
  driver: TestDriver,
): Omit<DeviceRun, 'requested' | 'lengths' | 'hex'> {
  const features = driver.controller.negotiatedFeatures;
  return {
    device,
    layout,
    status: driver.status,
    features: `0x${features.toString(16)}`,
    featureNames: Object.entries(Feature)
      .filter(([, bit]) => (features >> BigInt(bit)) & 1n)
      .map(([name]) => name),
    violations: driver.controller.violations.count(),
    sharedMemory: driver.memory.regions.every((region) => isShared(region.bytes.buffer)),
  };
}

/** Pages that are not cross-origin isolated have no `SharedArrayBuffer` global at all. */
function isShared(buffer: ArrayBufferLike): boolean {
  return typeof SharedArrayBuffer === 'function' && buffer instanceof SharedArrayBuffer;
}

function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
}
