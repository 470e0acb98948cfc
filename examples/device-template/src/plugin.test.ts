import { DeviceRegistry, OptionsError, parseDeviceArgument } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { describe, expect, it } from 'vitest';
import { SAMPLE_DEVICE_TYPE, SampleConfig, SampleFeature } from './constants.js';
import { SampleDevice } from './device.js';
import { samplePlugin } from './plugin.js';

function registry(): DeviceRegistry {
  const r = new DeviceRegistry();
  r.register(samplePlugin);
  return r;
}

describe('samplePlugin', () => {
  it('registers as sample, with the sample device type', () => {
    expect(samplePlugin.meta.name).toBe('sample');
    expect(samplePlugin.deviceType).toBe(SAMPLE_DEVICE_TYPE);
    expect(registry().names()).toEqual(['sample']);
  });

  it('creates a device from command-line options', async () => {
    const { type, options } = parseDeviceArgument(
      'sample,max_payload=4096,queue_size=64,adler32=off',
    );
    const device = await registry().create(type, options);
    expect(device).toBeInstanceOf(SampleDevice);
    expect(device.queues).toEqual([{ maxSize: 64 }]);
    expect(device.features & (1n << BigInt(SampleFeature.ADLER32))).toBe(0n);
    const driver = await TestDriver.create(device);
    const maxPayload = driver.readConfig(SampleConfig.MAX_PAYLOAD, 4);
    expect(new DataView(maxPayload.buffer).getUint32(0, true)).toBe(4096);
  });

  it('fills in defaults', async () => {
    const device = await registry().create('sample', {});
    expect(device.queues).toEqual([{ maxSize: 256 }]);
    expect(device.config?.getU32(SampleConfig.MAX_PAYLOAD)).toBe(65536);
  });

  it('refuses options that cannot work, naming them', async () => {
    await expect(registry().create('sample', { queue_size: '100' })).rejects.toThrow(
      /queue_size 100 is not a power of two/,
    );
    await expect(registry().create('sample', { max_payload: '0' })).rejects.toThrow(OptionsError);
    await expect(registry().create('sample', { colour: 'red' })).rejects.toThrow(/unknown option/);
  });
});
