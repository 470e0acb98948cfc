import { DeviceRegistry } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { describe, expect, it } from 'vitest';
import { rngPlugin } from './device.js';

describe('rng device plugin', () => {
  it.each(['split', 'packed'] as const)(
    'fills the guest buffers with random bytes (%s ring)',
    async (layout) => {
      const registry = new DeviceRegistry();
      registry.register(rngPlugin);
      const device = await registry.create('rng', { maxBytes: 64 });
      const driver = await TestDriver.create(device, { layout });

      const first = await driver.send(0, { writable: [48, 48] });
      const second = await driver.send(0, { writable: [16] });

      expect(first.len).toBe(64); // capped by maxBytes, across two buffers
      expect(second.len).toBe(16);
      expect(new Set(first.written).size).toBeGreaterThan(16); // not a constant fill
      expect(first.written).not.toEqual(second.written.subarray(0, 16));
    },
  );

  it('refuses options outside the schema', async () => {
    const registry = new DeviceRegistry();
    registry.register(rngPlugin);
    await expect(registry.create('rng', { maxBytes: 0 })).rejects.toThrow(
      "rng: option 'maxBytes' must be an integer of at least 1, got 0",
    );
  });
});
