/**
 * Device plugins the CLI knows: the built-in ones (blk, net, console, from their packages) and
 * third-party modules named with `--plugin MODULE`. Also renders a plugin's options for `--help`
 * from the descriptions in its schema.
 */

import { createRequire } from 'node:module';
import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type DevicePlugin, DeviceRegistry, type OptionSpec } from '@virtkit/core';
import { UsageError } from './errors.js';

/** True if `value` has the shape of a device plugin (what `registry.register` then checks fully). */
export function isDevicePlugin(value: unknown): value is DevicePlugin {
  if (typeof value !== 'object' || value === null) return false;
  const candidate = value as Partial<DevicePlugin>;
  return (
    typeof candidate.meta === 'object' &&
    candidate.meta !== null &&
    typeof candidate.meta.name === 'string' &&
    typeof candidate.create === 'function' &&
    typeof candidate.options === 'object' &&
    typeof candidate.deviceType === 'number'
  );
}

/** The plugins a module exports: its default export, named exports and `plugins` arrays. */
export function pluginsOf(module: Record<string, unknown>): DevicePlugin[] {
  const found = new Set<DevicePlugin>();
  for (const value of Object.values(module)) {
    if (isDevicePlugin(value)) found.add(value);
    else if (Array.isArray(value))
      for (const item of value) if (isDevicePlugin(item)) found.add(item);
  }
  return [...found];
}

/**
 * The built-in plugins, loaded lazily (so `virtkit guest` does not load device code). A package
 * that does not (yet) export its plugin is skipped.
 */
async function builtinPlugins(): Promise<DevicePlugin[]> {
  const loaders: [string, () => Promise<Record<string, unknown>>][] = [
    ['blkPlugin', () => import('@virtkit/device-blk')],
    ['netPlugin', () => import('@virtkit/device-net')],
    ['consolePlugin', () => import('@virtkit/device-console')],
  ];
  const plugins: DevicePlugin[] = [];
  for (const [name, load] of loaders) {
    try {
      const plugin = (await load())[name];
      if (isDevicePlugin(plugin)) plugins.push(plugin);
    } catch {
      // Not installed or not built: the device type is simply not offered.
    }
  }
  return plugins;
}

/** Imports a `--plugin` module: a path (relative to the working directory) or a package name. */
async function importPluginModule(specifier: string): Promise<Record<string, unknown>> {
  const looksLikePath =
    specifier.startsWith('.') || isAbsolute(specifier) || /\.[cm]?[jt]s$/.test(specifier);
  if (looksLikePath) {
    return (await import(pathToFileURL(resolve(specifier)).href)) as Record<string, unknown>;
  }
  try {
    return (await import(specifier)) as Record<string, unknown>;
  } catch (first) {
    // Resolve a package name from the working directory (where the user installed it).
    let resolved: string;
    try {
      resolved = createRequire(resolve('package.json')).resolve(specifier);
    } catch {
      throw first;
    }
    return (await import(pathToFileURL(resolved).href)) as Record<string, unknown>;
  }
}

/**
 * A registry with the built-in plugins and those of each `--plugin` module. Throws a
 * {@link UsageError} when a module cannot be loaded, exports no plugin, or a plugin is refused.
 */
export async function createRegistry(
  pluginModules: readonly string[] = [],
): Promise<DeviceRegistry> {
  const registry = new DeviceRegistry();
  for (const plugin of await builtinPlugins()) registry.register(plugin);
  for (const specifier of pluginModules) {
    let module: Record<string, unknown>;
    try {
      module = await importPluginModule(specifier);
    } catch (error) {
      throw new UsageError(`cannot load plugin module '${specifier}': ${firstLine(error)}`);
    }
    const plugins = pluginsOf(module);
    if (plugins.length === 0) {
      throw new UsageError(`plugin module '${specifier}' exports no device plugin`);
    }
    for (const plugin of plugins) {
      try {
        registry.register(plugin);
      } catch (error) {
        throw new UsageError(`plugin module '${specifier}': ${firstLine(error)}`);
      }
    }
  }
  return registry;
}

/** The first line of an error's message. */
export function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0]!.trim();
}

function optionValue(spec: OptionSpec): string {
  switch (spec.type) {
    case 'boolean':
      return 'on|off';
    case 'integer':
      return spec.min !== undefined && spec.max !== undefined ? `${spec.min}..${spec.max}` : 'N';
    case 'enum':
      return spec.values.join('|');
    case 'string':
      return 'VALUE';
  }
}

function optionDefault(spec: OptionSpec): string {
  if (spec.required) return ' (required)';
  if (spec.default === undefined) return '';
  const value = spec.type === 'boolean' ? (spec.default ? 'on' : 'off') : String(spec.default);
  return ` (default ${value})`;
}

/** Help text for the plugins of `registry`: each plugin, then its options from the schema. */
export function describePlugins(registry: DeviceRegistry): string {
  const lines: string[] = [];
  for (const name of registry.names()) {
    const plugin = registry.get(name)!;
    lines.push(`  ${name}${plugin.description ? ` - ${plugin.description}` : ''}`);
    const entries = Object.entries(plugin.options);
    const width = Math.max(
      0,
      ...entries.map(([key, spec]) => key.length + optionValue(spec).length + 1),
    );
    for (const [key, spec] of entries) {
      const left = `${key}=${optionValue(spec)}`;
      lines.push(`      ${left.padEnd(width)}  ${spec.description}${optionDefault(spec)}`);
    }
  }
  return lines.length > 0 ? lines.join('\n') : '  (none installed)';
}
