import { describe, expect, it } from 'vitest';
import { DeviceType } from './constants.js';
import { defineDevicePlugin, type VirtioDevice } from './device.js';
import { OptionsError, PluginError } from './errors.js';
import { defineOptions } from './options.js';
import { CORE_VERSION, DeviceRegistry } from './registry.js';

function device(type: number = DeviceType.ENTROPY, maxSize = 64): VirtioDevice {
  return {
    deviceType: type,
    features: 0n,
    queues: [{ maxSize }],
    activate() {},
    queueNotify() {},
    reset() {},
  };
}

const rng = defineDevicePlugin({
  meta: { name: 'rng', version: '1.2.3', core: `^${CORE_VERSION}` },
  deviceType: DeviceType.ENTROPY,
  options: defineOptions({
    seed: { type: 'integer', description: 'seed', default: 7, min: 0 },
    source: {
      type: 'enum',
      values: ['prng', 'host'],
      description: 'entropy source',
      default: 'prng',
    },
    path: { type: 'string', description: 'entropy file' },
  }),
  validate: (options) =>
    options.source === 'host' && !options.path ? 'source=host needs path' : undefined,
  create: (options) => ({ ...device(), seedUsed: options.seed }) as VirtioDevice,
});

describe('DeviceRegistry', () => {
  it('creates devices by plugin name with validated, coerced options', async () => {
    const registry = new DeviceRegistry();
    registry.register(rng);
    const created = (await registry.create('rng', { seed: '42' })) as VirtioDevice & {
      seedUsed: number;
    };
    expect(created.seedUsed).toBe(42);
    expect(registry.names()).toEqual(['rng']);
    expect(registry.get('rng')).toBe(rng);
  });

  it('refuses bad options with the plugin name in the message', async () => {
    const registry = new DeviceRegistry();
    registry.register(rng);
    await expect(registry.create('rng', { seed: -1 })).rejects.toThrow(
      /rng: option 'seed' must be an integer of at least 0/,
    );
    await expect(registry.create('rng', { source: 'host' })).rejects.toThrow(OptionsError);
    await expect(registry.create('rng', { source: 'host' })).rejects.toThrow(
      'rng: source=host needs path',
    );
  });

  it('refuses unknown plugins, naming the registered ones', async () => {
    const registry = new DeviceRegistry();
    registry.register(rng);
    await expect(registry.create('blk')).rejects.toThrow(
      "no device plugin named 'blk' (registered: rng)",
    );
  });

  it('refuses a duplicate name', () => {
    const registry = new DeviceRegistry();
    registry.register(rng);
    const error = (() => {
      try {
        registry.register({ ...rng, meta: { ...rng.meta, version: '2.0.0' } });
      } catch (e) {
        return e as PluginError;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(PluginError);
    expect(error?.code).toBe('PLUGIN_DUPLICATE');
    expect(error?.message).toBe("a plugin named 'rng' is already registered (version 1.2.3)");
  });

  it('refuses a plugin written for another core', () => {
    const registry = new DeviceRegistry({ coreVersion: '0.1.0' });
    expect(() => registry.register({ ...rng, meta: { ...rng.meta, core: '^1.0.0' } })).toThrow(
      "plugin 'rng' 1.2.3 needs @virtkit/core ^1.0.0, but this is 0.1.0",
    );
    const newer = new DeviceRegistry({ coreVersion: '0.2.0' });
    expect(() => newer.register({ ...rng, meta: { ...rng.meta, core: '^0.1.0' } })).toThrow(
      /PLUGIN_INCOMPATIBLE|needs @virtkit\/core/,
    );
  });

  it.each([
    [{ name: 'Bad Name', version: '1.0.0', core: '*' }, /lowercase/],
    [{ name: 'ok', version: 'one', core: '*' }, /not semver/],
    [{ name: 'ok', version: '1.0.0', core: 'not a range!' }, /not a semver range/],
  ])('refuses malformed metadata %j', (meta, message) => {
    expect(() => new DeviceRegistry().register({ ...rng, meta })).toThrow(message);
  });

  it('refuses a created device that contradicts the plugin', async () => {
    const registry = new DeviceRegistry();
    registry.register({
      ...rng,
      meta: { ...rng.meta, name: 'liar' },
      create: () => device(DeviceType.NET),
    });
    await expect(registry.create('liar')).rejects.toThrow(
      "plugin 'liar' created a device of type 1, but declares type 4",
    );
    registry.register({
      ...rng,
      meta: { ...rng.meta, name: 'odd' },
      create: () => device(DeviceType.ENTROPY, 100),
    });
    await expect(registry.create('odd')).rejects.toThrow(
      /queue 0 with invalid maximum size 100 \(must be a power of two/,
    );
  });

  it('emits typed events', async () => {
    const registry = new DeviceRegistry();
    const seen: string[] = [];
    registry.events.on('register', (plugin) => seen.push(`register ${plugin.meta.name}`));
    registry.events.on('create', (name, created) =>
      seen.push(`create ${name} ${created.deviceType}`),
    );
    registry.register(rng);
    await registry.create('rng');
    expect(seen).toEqual(['register rng', 'create rng 4']);
    // The event map is checked at compile time (tsc -b type-checks this file).
    // @ts-expect-error: no such event
    registry.events.on('created', () => {});
    // @ts-expect-error: 'create' passes a name, not a number
    registry.events.on('create', (name: number) => name);
  });
});
