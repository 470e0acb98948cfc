/**
 * Kernel module dependencies and load order.
 *
 * Debian's kernel packages do not ship `modules.dep` (depmod writes it when the package is
 * installed, and we never install it), so dependencies come from each module's own `.modinfo`
 * section (`depends=a,b`, written by modpost) when there is no `modules.dep`. Either way the load
 * order is computed, never hard-coded.
 */

import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { gunzip } from 'node:zlib';
import { GuestError } from './errors.js';
import { requireTools, runCommand } from './tools.js';

/** The virtio drivers a Virtkit guest loads by default (names as the kernel spells them). */
export const DEFAULT_GUEST_MODULES: readonly string[] = [
  'virtio_pci',
  'virtio_mmio',
  'virtio_blk',
  'virtio_net',
  'virtio_console',
  'virtio_rng',
];

/** One loadable module and the modules it needs loaded first. */
export interface ModuleInfo {
  /** Module name with `-` spelled `_` (`virtio-rng.ko` is `virtio_rng`). */
  readonly name: string;
  /** Path relative to the modules directory (`kernel/drivers/virtio/virtio.ko`, maybe `.xz`). */
  readonly path: string;
  /** Names of modules it depends on (direct, or the transitive list `modules.dep` gives). */
  readonly deps: readonly string[];
}

/** Result of {@link resolveLoadOrder}. */
export interface LoadOrder {
  /** Modules to insmod, each after everything it depends on. */
  readonly modules: readonly ModuleInfo[];
  /** Requested modules that are built into the kernel (nothing to load). */
  readonly builtin: readonly string[];
}

const MODULE_SUFFIX = /\.ko(\.xz|\.zst|\.gz)?$/;

/** The kernel's name for a module file: basename without `.ko[.xz|.zst|.gz]`, `-` as `_`. */
export function moduleNameOf(path: string): string {
  const base = path.slice(path.lastIndexOf('/') + 1).replace(MODULE_SUFFIX, '');
  return base.replaceAll('-', '_');
}

/** Normalizes a user-given module name (`virtio-rng`, `virtio_rng.ko`) to the kernel's spelling. */
export function normalizeModuleName(name: string): string {
  return moduleNameOf(name.trim());
}

function lines(text: string): string[] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
}

/** Parses `modules.dep` (`path: dep-path dep-path...`) into modules keyed by name. */
export function parseModulesDep(text: string): Map<string, ModuleInfo> {
  const modules = new Map<string, ModuleInfo>();
  for (const line of lines(text)) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const path = line.slice(0, colon).trim();
    const deps = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .filter((dep) => dep !== '')
      .map(moduleNameOf);
    modules.set(moduleNameOf(path), { name: moduleNameOf(path), path, deps });
  }
  return modules;
}

/** Parses `modules.builtin` or `modules.order` (one module path per line) into names, in order. */
export function parseModuleList(text: string): string[] {
  return lines(text).map(moduleNameOf);
}

/**
 * Writes `modules.dep` text for `modules` (paths as given), listing each module's dependencies in
 * the reverse of load order, as depmod does: modprobe loads them from the end of the list.
 */
export function formatModulesDep(modules: readonly ModuleInfo[]): string {
  const byName = new Map(modules.map((module) => [module.name, module]));
  const position = new Map(modules.map((module, index) => [module.name, index]));
  return modules
    .map((module) => {
      const closure = new Set<string>();
      const visit = (name: string): void => {
        for (const dep of byName.get(name)?.deps ?? []) {
          if (!closure.has(dep)) {
            closure.add(dep);
            visit(dep);
          }
        }
      };
      visit(module.name);
      const deps = [...closure]
        .filter((dep) => byName.has(dep))
        .sort((a, b) => (position.get(b) ?? 0) - (position.get(a) ?? 0))
        .map((dep) => byName.get(dep)!.path);
      return `${module.path}:${deps.map((dep) => ` ${dep}`).join('')}\n`;
    })
    .join('');
}

/**
 * Orders the requested modules and everything they depend on so that each comes after its
 * dependencies. Depth-first in request order; a module's dependencies are visited in
 * `modules.order` (kernel link) order, so the result is the same whatever order the metadata
 * listed them in. Built-in modules are reported, not loaded.
 */
export function resolveLoadOrder(
  available: ReadonlyMap<string, ModuleInfo>,
  wanted: readonly string[],
  options: { readonly builtin?: Iterable<string>; readonly linkOrder?: readonly string[] } = {},
): LoadOrder {
  const builtin = new Set(options.builtin ?? []);
  const rank = new Map((options.linkOrder ?? []).map((name, index) => [name, index]));
  const byRank = (a: string, b: string): number =>
    (rank.get(a) ?? Number.MAX_SAFE_INTEGER) - (rank.get(b) ?? Number.MAX_SAFE_INTEGER) ||
    (a < b ? -1 : a > b ? 1 : 0);
  const ordered: ModuleInfo[] = [];
  const done = new Set<string>();
  const active: string[] = [];
  const builtinHit: string[] = [];

  const visit = (name: string, neededBy: string | undefined): void => {
    if (done.has(name)) return;
    if (active.includes(name)) {
      throw new GuestError(
        'MODULE_INVALID',
        `kernel module dependency cycle: ${[...active.slice(active.indexOf(name)), name].join(' -> ')}`,
      );
    }
    const module = available.get(name);
    if (!module) {
      if (builtin.has(name)) {
        done.add(name);
        if (neededBy === undefined) builtinHit.push(name);
        return;
      }
      throw new GuestError(
        'MODULE_NOT_FOUND',
        neededBy === undefined
          ? `kernel module ${name} is neither a loadable module nor built into this kernel`
          : `kernel module ${name} (needed by ${neededBy}) is neither a loadable module nor built in`,
      );
    }
    active.push(name);
    for (const dep of [...module.deps].sort(byRank)) visit(dep, name);
    active.pop();
    done.add(name);
    ordered.push(module);
  };

  for (const name of wanted) visit(normalizeModuleName(name), undefined);
  return { modules: ordered, builtin: builtinHit };
}

/**
 * Reads the NUL-separated `key=value` strings of an ELF64 module's `.modinfo` section.
 * Throws `MODULE_INVALID` for anything that is not a 64-bit ELF file with that section.
 */
export function readModinfo(elf: Uint8Array): Map<string, string[]> {
  const fail = (why: string): never => {
    throw new GuestError('MODULE_INVALID', `not a usable kernel module: ${why}`);
  };
  if (elf.length < 64 || elf[0] !== 0x7f || elf[1] !== 0x45 || elf[2] !== 0x4c || elf[3] !== 0x46) {
    fail('no ELF header');
  }
  if (elf[4] !== 2) fail('not a 64-bit ELF file');
  const little = elf[5] === 1;
  const view = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  const u16 = (at: number): number => view.getUint16(at, little);
  const u32 = (at: number): number => view.getUint32(at, little);
  const u64 = (at: number): number => {
    const value = view.getBigUint64(at, little);
    if (value > BigInt(elf.length)) fail(`offset ${value} beyond the file`);
    return Number(value);
  };
  const sectionTable = u64(0x28);
  const entrySize = u16(0x3a);
  const count = u16(0x3c);
  const namesIndex = u16(0x3e);
  if (entrySize < 64 || sectionTable + entrySize * count > elf.length) fail('bad section table');
  const section = (index: number): { name: number; offset: number; size: number } => {
    const at = sectionTable + index * entrySize;
    const offset = u64(at + 0x18);
    const size = u64(at + 0x20);
    if (offset + size > elf.length) fail(`section ${index} runs past the end`);
    return { name: u32(at), offset, size };
  };
  if (namesIndex >= count) fail('no section name table');
  const names = section(namesIndex);
  const decoder = new TextDecoder();
  const nameAt = (offset: number): string => {
    const start = names.offset + offset;
    let end = start;
    while (end < names.offset + names.size && elf[end] !== 0) end++;
    return decoder.decode(elf.subarray(start, end));
  };
  for (let index = 0; index < count; index++) {
    const candidate = section(index);
    if (nameAt(candidate.name) !== '.modinfo') continue;
    const info = new Map<string, string[]>();
    const text = decoder.decode(elf.subarray(candidate.offset, candidate.offset + candidate.size));
    for (const entry of text.split('\0')) {
      const eq = entry.indexOf('=');
      if (eq <= 0) continue;
      const key = entry.slice(0, eq);
      info.set(key, [...(info.get(key) ?? []), entry.slice(eq + 1)]);
    }
    return info;
  }
  return fail('no .modinfo section');
}

/** Direct dependencies of a module from its `.modinfo` (`depends=` is comma-separated). */
export function modinfoDepends(info: ReadonlyMap<string, readonly string[]>): string[] {
  return (info.get('depends') ?? [])
    .flatMap((value) => value.split(','))
    .filter((name) => name !== '')
    .map(normalizeModuleName);
}

/** Reads a module file, decompressing `.ko.gz` (zlib), `.ko.xz` (xz CLI), `.ko.zst` (zstd). */
export async function readModuleFile(path: string): Promise<Buffer> {
  if (path.endsWith('.ko')) return readFile(path);
  if (path.endsWith('.ko.gz')) {
    const compressed = await readFile(path);
    return new Promise((resolve, reject) =>
      gunzip(compressed, (error, result) => (error ? reject(error) : resolve(result))),
    );
  }
  const tool = path.endsWith('.ko.xz') ? 'xz' : path.endsWith('.ko.zst') ? 'zstd' : undefined;
  if (tool === undefined) {
    throw new GuestError('MODULE_INVALID', `unknown kernel module file type: ${path}`);
  }
  requireTools([tool]);
  return (await runCommand(tool, ['-dc', '--', path])).stdout;
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

async function listModuleFiles(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile() && MODULE_SUFFIX.test(entry.name))
    .map((entry) => relative(root, join(entry.parentPath, entry.name)))
    .sort();
}

/** A kernel's modules directory (`lib/modules/<version>`) with the requested modules resolved. */
export interface ResolvedModules extends LoadOrder {
  /** Where the dependency information came from. */
  readonly source: 'modules.dep' | 'modinfo';
}

/**
 * Resolves `wanted` (plus dependencies) in a modules directory: `modules.dep` if depmod has run,
 * else the `.modinfo` of each module reached (decompressing as needed).
 */
export async function resolveModulesIn(
  modulesDir: string,
  wanted: readonly string[],
): Promise<ResolvedModules> {
  const builtin = parseModuleList((await readOptional(join(modulesDir, 'modules.builtin'))) ?? '');
  const linkOrder = parseModuleList((await readOptional(join(modulesDir, 'modules.order'))) ?? '');
  const depText = await readOptional(join(modulesDir, 'modules.dep'));
  if (depText !== undefined && depText.trim() !== '') {
    return {
      ...resolveLoadOrder(parseModulesDep(depText), wanted, { builtin, linkOrder }),
      source: 'modules.dep',
    };
  }

  const paths = new Map<string, string>();
  for (const path of await listModuleFiles(modulesDir)) paths.set(moduleNameOf(path), path);
  // Read .modinfo only for the modules reachable from the request, not all few thousand.
  const available = new Map<string, ModuleInfo>();
  const queue = wanted.map(normalizeModuleName);
  while (queue.length > 0) {
    const name = queue.shift()!;
    const path = paths.get(name);
    if (available.has(name) || path === undefined) continue;
    const deps = modinfoDepends(readModinfo(await readModuleFile(join(modulesDir, path))));
    available.set(name, { name, path, deps });
    queue.push(...deps);
  }
  return { ...resolveLoadOrder(available, wanted, { builtin, linkOrder }), source: 'modinfo' };
}
