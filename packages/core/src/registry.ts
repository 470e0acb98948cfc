/**
 * The device plugin registry: plugins register once; a VMM creates devices by plugin name with an
 * options object (or command-line `key=value` strings), validated against the plugin's schema.
 */

import { EventEmitter } from 'eventemitter3';
// Only the three functions used: the whole package would add ~75 KiB to a browser bundle.
import satisfies from 'semver/functions/satisfies.js';
import valid from 'semver/functions/valid.js';
import validRange from 'semver/ranges/valid.js';
import {
  checkDeviceShape,
  type DeviceEnvironment,
  type DevicePlugin,
  type VirtioDevice,
} from './device.js';
import { OptionsError, PluginError } from './errors.js';
import { type OptionsSchema, parseOptions } from './options.js';

/** The version of @virtkit/core that plugins are checked against. */
export const CORE_VERSION: string = __VIRTKIT_CORE_VERSION__;

const NAME_PATTERN = /^[a-z][a-z0-9-]*$/;

/** Typed events of a {@link DeviceRegistry}. */
export interface RegistryEvents {
  /** A plugin was registered. */
  register: [plugin: DevicePlugin];
  /** A device was created by plugin name. */
  create: [name: string, device: VirtioDevice];
}

/**
 * Known device plugins by name.
 *
 * @example
 * ```ts
 * const registry = new DeviceRegistry();
 * registry.register(blkPlugin);
 * const device = await registry.create('blk', { path: 'disk.img', readonly: true });
 * ```
 */
export class DeviceRegistry {
  /** Typed events (see {@link RegistryEvents}). */
  readonly events = new EventEmitter<RegistryEvents>();
  readonly #plugins = new Map<string, DevicePlugin>();
  readonly #coreVersion: string;

  /** `coreVersion` is for tests of the compatibility check; it defaults to this core's version. */
  constructor(options: { coreVersion?: string } = {}) {
    this.#coreVersion = options.coreVersion ?? CORE_VERSION;
  }

  /**
   * Adds a plugin. Refuses, with a message naming the plugin: a malformed name or version, a core
   * range this core does not satisfy, and a name already registered.
   */
  register<S extends OptionsSchema>(plugin: DevicePlugin<S>): void {
    const meta = plugin.meta as Partial<DevicePlugin['meta']> | undefined;
    const name = meta?.name;
    if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
      throw new PluginError(
        'PLUGIN_INVALID',
        `plugin name ${JSON.stringify(name)} must be lowercase letters, digits and dashes`,
      );
    }
    if (typeof meta?.version !== 'string' || !valid(meta.version)) {
      throw new PluginError(
        'PLUGIN_INVALID',
        `plugin '${name}' has version ${JSON.stringify(meta?.version)}, which is not semver`,
      );
    }
    if (typeof meta.core !== 'string' || validRange(meta.core) === null) {
      throw new PluginError(
        'PLUGIN_INVALID',
        `plugin '${name}' states core range ${JSON.stringify(meta.core)}, which is not a semver range`,
      );
    }
    if (!satisfies(this.#coreVersion, meta.core, { includePrerelease: true })) {
      throw new PluginError(
        'PLUGIN_INCOMPATIBLE',
        `plugin '${name}' ${meta.version} needs @virtkit/core ${meta.core}, but this is ${this.#coreVersion}`,
      );
    }
    if (
      !Number.isInteger(plugin.deviceType) ||
      plugin.deviceType <= 0 ||
      plugin.deviceType > 0xffff
    ) {
      throw new PluginError(
        'PLUGIN_INVALID',
        `plugin '${name}' has invalid virtio device type ${plugin.deviceType}`,
      );
    }
    if (
      typeof plugin.create !== 'function' ||
      typeof plugin.options !== 'object' ||
      plugin.options === null
    ) {
      throw new PluginError(
        'PLUGIN_INVALID',
        `plugin '${name}' must have an options schema and a create function`,
      );
    }
    const existing = this.#plugins.get(name);
    if (existing) {
      throw new PluginError(
        'PLUGIN_DUPLICATE',
        `a plugin named '${name}' is already registered (version ${existing.meta.version})`,
      );
    }
    this.#plugins.set(name, plugin as unknown as DevicePlugin);
    this.events.emit('register', plugin as unknown as DevicePlugin);
  }

  /** The plugin registered as `name`, if any. */
  get(name: string): DevicePlugin | undefined {
    return this.#plugins.get(name);
  }

  /** Registered plugin names, sorted. */
  names(): string[] {
    return [...this.#plugins.keys()].sort();
  }

  /**
   * Creates a device with plugin `name` from an options object. Options are validated against the
   * plugin's schema (strings are coerced, so command-line values work) and its own `validate`.
   */
  async create(
    name: string,
    options: Readonly<Record<string, unknown>> = {},
    environment: DeviceEnvironment = {},
  ): Promise<VirtioDevice> {
    const plugin = this.#plugins.get(name);
    if (!plugin) {
      const known = this.names();
      throw new PluginError(
        'PLUGIN_UNKNOWN',
        `no device plugin named '${name}'${known.length > 0 ? ` (registered: ${known.join(', ')})` : ''}`,
      );
    }
    const parsed = parseOptions(plugin.options, options, name);
    const problem = plugin.validate?.(parsed);
    if (problem) throw new OptionsError(`${name}: ${problem}`);
    const device = await plugin.create(parsed, environment);
    if (device.deviceType !== plugin.deviceType) {
      throw new PluginError(
        'PLUGIN_INVALID',
        `plugin '${name}' created a device of type ${device.deviceType}, but declares type ${plugin.deviceType}`,
      );
    }
    const shapeProblem = checkDeviceShape(device);
    if (shapeProblem)
      throw new PluginError(
        'PLUGIN_INVALID',
        `plugin '${name}' created a device with ${shapeProblem}`,
      );
    this.events.emit('create', name, device);
    return device;
  }
}
