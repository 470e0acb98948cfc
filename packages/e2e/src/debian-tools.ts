/**
 * Debian programs for the guest (fio, iperf3): fetched with `apt-get download` through the
 * private apt configuration @virtkit/guest keeps in its cache (the host's apt state is untouched,
 * nothing is installed), unpacked, and reduced to the program plus the shared libraries it loads
 * (found from ELF DT_NEEDED entries), ready to be added to an initramfs as extra files.
 *
 * Only library packages are followed from a package's Depends (lib*, zlib1g): maintainer-script
 * dependencies such as perl, python3 or debconf are never downloaded.
 */

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { defaultGuestDir, type HostFile } from '@virtkit/guest';
import { E2eError } from './errors.js';
import { runCommand } from './process.js';

/** The x86_64 dynamic loader, where every Debian binary's PT_INTERP points. */
const LOADER = '/lib64/ld-linux-x86-64.so.2';
/** Where the guest's loader looks by default (Debian's multiarch directory). */
const GUEST_LIB_DIR = '/lib/x86_64-linux-gnu';

/** A program unpacked from Debian with the libraries it needs. */
export interface DebianTool {
  /** Path of the program in the unpacked tree (runs on a Debian 12 host as is). */
  readonly program: string;
  /** Directories holding its libraries, for LD_LIBRARY_PATH when run on the host. */
  readonly libraryPath: string;
  /** The program (as /usr/bin/NAME), its libraries and the loader, for `buildInitramfs`. */
  readonly guestFiles: HostFile[];
  /** Total size of `guestFiles` in bytes. */
  readonly bytes: number;
}

/** Options of {@link fetchDebianTool}. */
export interface FetchDebianToolOptions {
  /** Debian package, e.g. `fio`. */
  readonly pkg: string;
  /** Program inside the package, e.g. `/usr/bin/fio`. */
  readonly program: string;
  /** Cache directory; default `<guest cache>/tools`. */
  readonly dir?: string;
  readonly onProgress?: (detail: string) => void;
}

/** Fetches (once; later calls read the cache) a Debian program and its shared libraries. */
export async function fetchDebianTool(options: FetchDebianToolOptions): Promise<DebianTool> {
  const guestDir = defaultGuestDir('x86_64');
  const aptRoot = join(guestDir, 'apt');
  if (!existsSync(join(aptRoot, 'sources.list'))) {
    throw new E2eError(
      'INVALID_OPTIONS',
      `no private apt configuration in ${aptRoot}: prepare the guest first (virtkit guest prepare)`,
    );
  }
  const dir = join(options.dir ?? join(guestDir, 'tools'), options.pkg);
  const root = join(dir, 'root');
  const done = join(dir, '.complete');
  if (!existsSync(done)) {
    await mkdir(join(dir, 'debs'), { recursive: true });
    const apt = aptOptions(aptRoot);
    const queue = [options.pkg];
    const seen = new Set<string>();
    while (queue.length > 0) {
      const pkg = queue.shift()!;
      if (seen.has(pkg)) continue;
      seen.add(pkg);
      options.onProgress?.(`apt-get download ${pkg}`);
      await runCommand('apt-get', [...apt, 'download', pkg], { cwd: join(dir, 'debs') });
      const depends = await runCommand('apt-cache', [...apt, 'depends', pkg]);
      for (const match of depends.matchAll(/^ {2}(?:Pre)?Depends: ([^\s<>]+)/gm)) {
        const dep = match[1]!.replace(/:any$/, '');
        if (/^(lib|zlib1g)/.test(dep) && !/^libc-bin$/.test(dep)) queue.push(dep);
      }
    }
    for (const deb of readdirSync(join(dir, 'debs')).filter((name) => name.endsWith('.deb'))) {
      await runCommand('dpkg-deb', ['-x', join(dir, 'debs', deb), root]);
    }
    await writeFile(done, `${[...seen].join('\n')}\n`);
  }
  const program = join(root, options.program);
  if (!existsSync(program)) {
    throw new E2eError('INVALID_OPTIONS', `${options.pkg} has no ${options.program}`);
  }
  const libraries = indexLibraries(root);
  const needed = new Map<string, string>();
  const pending = [program];
  while (pending.length > 0) {
    const file = pending.pop()!;
    for (const soname of readElfDynamic(file).needed) {
      if (needed.has(soname)) continue;
      const path = libraries.get(soname);
      if (path === undefined) {
        throw new E2eError(
          'INVALID_OPTIONS',
          `${basename(file)} needs ${soname}, which no unpacked package of ${options.pkg} provides`,
        );
      }
      needed.set(soname, path);
      pending.push(path);
    }
  }
  const loader = libraries.get(basename(LOADER));
  if (loader === undefined) throw new E2eError('INVALID_OPTIONS', 'libc6 did not unpack a loader');
  const guestFiles: HostFile[] = [
    {
      type: 'host-file',
      path: `/usr/bin/${basename(options.program)}`,
      source: program,
      mode: 0o755,
    },
    { type: 'host-file', path: LOADER, source: loader, mode: 0o755 },
    ...[...needed]
      .filter(([soname]) => soname !== basename(LOADER))
      .map(
        ([soname, source]): HostFile => ({
          type: 'host-file',
          path: `${GUEST_LIB_DIR}/${soname}`,
          source,
          mode: 0o644,
        }),
      ),
  ];
  return {
    program,
    libraryPath: [...new Set([...needed.values()].map((path) => join(path, '..')))].join(':'),
    guestFiles,
    bytes: guestFiles.reduce((sum, file) => sum + statSync(file.source).size, 0),
  };
}

/** The `-o` options that point apt at @virtkit/guest's private configuration. */
function aptOptions(aptRoot: string): string[] {
  return [
    ['Dir::Etc::SourceList', join(aptRoot, 'sources.list')],
    ['Dir::Etc::SourceParts', join(aptRoot, 'sources.list.d')],
    ['Dir::Etc::Preferences', join(aptRoot, 'preferences')],
    ['Dir::Etc::PreferencesParts', join(aptRoot, 'preferences.d')],
    ['Dir::State::Lists', join(aptRoot, 'lists')],
    ['Dir::Cache', join(aptRoot, 'cache')],
    ['APT::Architectures::', 'amd64'],
    ['APT::Architecture', 'amd64'],
    ['Acquire::Languages', 'none'],
    ...(process.getuid?.() === 0 ? [['APT::Sandbox::User', 'root']] : []),
  ].flatMap(([key, value]) => ['-o', `${key}=${value}`]);
}

/** Every shared object in an unpacked tree by file name (symlinks resolved by reading through). */
function indexLibraries(root: string): Map<string, string> {
  const found = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (/\.so(\.\d+)*$/.test(entry.name) && !found.has(entry.name)) {
        // Symlinks inside the tree may be absolute (/lib/...): keep only ones that resolve here.
        try {
          if (statSync(path).isFile()) found.set(entry.name, path);
        } catch {
          // dangling
        }
      }
    }
  };
  walk(root);
  return found;
}

/** The DT_NEEDED entries of an ELF64 little-endian file. */
export function readElfDynamic(path: string): { needed: string[] } {
  const elf = readFileSync(path);
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) {
    throw new E2eError('INVALID_OPTIONS', `${path} is not a 64-bit little-endian ELF file`);
  }
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  const loads: { vaddr: number; offset: number; size: number }[] = [];
  let dynamic: { offset: number; size: number } | undefined;
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    const type = elf.readUInt32LE(at);
    const offset = Number(elf.readBigUInt64LE(at + 8));
    const vaddr = Number(elf.readBigUInt64LE(at + 16));
    const size = Number(elf.readBigUInt64LE(at + 32));
    if (type === 1) loads.push({ vaddr, offset, size });
    else if (type === 2) dynamic = { offset, size };
  }
  if (dynamic === undefined) return { needed: [] };
  const toOffset = (address: number): number => {
    const load = loads.find((l) => address >= l.vaddr && address < l.vaddr + l.size);
    if (!load) throw new E2eError('INVALID_OPTIONS', `${path}: address ${address} is not loaded`);
    return address - load.vaddr + load.offset;
  };
  const neededOffsets: number[] = [];
  let strtab: number | undefined;
  for (let at = dynamic.offset; at + 16 <= dynamic.offset + dynamic.size; at += 16) {
    const tag = Number(elf.readBigInt64LE(at));
    const value = Number(elf.readBigUInt64LE(at + 8));
    if (tag === 0) break;
    if (tag === 1) neededOffsets.push(value);
    else if (tag === 5) strtab = value;
  }
  if (strtab === undefined) return { needed: [] };
  const table = toOffset(strtab);
  return {
    needed: neededOffsets.map((offset) => {
      const start = table + offset;
      return elf.toString('latin1', start, elf.indexOf(0, start));
    }),
  };
}
