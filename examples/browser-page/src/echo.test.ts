import { DeviceRegistry } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { describe, expect, it } from 'vitest';
import { echoPlugin } from './echo.js';

async function echoDriver(layout: 'split' | 'packed') {
  const registry = new DeviceRegistry();
  registry.register(echoPlugin);
  return TestDriver.create(await registry.create('echo'), { layout });
}

describe('echo device', () => {
  it.each(['split', 'packed'] as const)(
    'echoes across segments of different sizes (%s ring)',
    async (layout) => {
      const driver = await echoDriver(layout);
      const bytes = Uint8Array.from({ length: 300 }, (_, i) => (i * 7) & 0xff);
      const reply = await driver.send(0, {
        readable: [bytes.subarray(0, 1), bytes.subarray(1, 200), bytes.subarray(200)],
        writable: [100, 250],
      });
      expect(reply.len).toBe(300);
      expect(reply.written).toEqual(bytes);
      expect(driver.controller.violations.count()).toBe(0);
    },
  );

  it('echoes what fits and counts a request with too little writable space', async () => {
    const driver = await echoDriver('split');
    const reply = await driver.send(0, {
      readable: [new TextEncoder().encode('too long')],
      writable: [3],
    });
    expect(new TextDecoder().decode(reply.written)).toBe('too');
    expect(driver.controller.violations.count('REQUEST_MALFORMED')).toBe(1);
    // The device keeps working: the next well-formed request is answered in full.
    const next = await driver.send(0, { readable: [Uint8Array.of(1, 2)], writable: [2] });
    expect(next.written).toEqual(Uint8Array.of(1, 2));
  });
});
