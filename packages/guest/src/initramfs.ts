/**
 * buildInitramfs: a gzipped newc initramfs with busybox, the prepared virtio modules, the
 * generated `/init` and optionally `/test.sh` and caller-supplied files.
 */

import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzip } from 'node:zlib';
import { defaultGuestDir, type GuestArch, withCacheLock } from './cache.js';
import { type CpioEntry, encodeCpio } from './cpio.js';
import { GuestError } from './errors.js';
import {
  createInitScript,
  GUEST_EXIT_ACTIONS,
  GUEST_MODES,
  GUEST_MODULE_LIST,
  type GuestExitAction,
  type GuestMode,
} from './init.js';
import { type PreparedGuest, readPreparedGuest } from './prepare.js';

/** A file copied from the host into the initramfs. Mode defaults to the host file's. */
export interface HostFile {
  readonly type: 'host-file';
  /** Path inside the guest. */
  readonly path: string;
  /** Path on the host. */
  readonly source: string;
  readonly mode?: number;
}

/** Something to put in the initramfs besides the standard contents. */
export type GuestFile = CpioEntry | HostFile;

/** Options of {@link buildInitramfs}. */
export interface BuildInitramfsOptions {
  /** Guest architecture; default `x86_64`. */
  readonly arch?: GuestArch;
  /** Cache directory prepared by prepareGuest; default {@link defaultGuestDir}(arch). */
  readonly dir?: string;
  /** Default mode of `/init` (the kernel command line `virtkit.mode=` overrides); default `shell`. */
  readonly mode?: GuestMode;
  /** Default end of the guest (`virtkit.exit=` overrides); default `reboot`. */
  readonly exit?: GuestExitAction;
  /** Shell script stored as `/test.sh`, run by `script` mode. Required for mode `script`. */
  readonly script?: string;
  /** More files; parent directories are created, and a path here replaces a standard one. */
  readonly extraFiles?: readonly GuestFile[];
  /**
   * Where to write the image. Default: `<dir>/initramfs-<mode>.cpio.gz`, or with a script or
   * extra files `<dir>/initramfs-<mode>-<content hash>.cpio.gz` (an existing one is reused).
   */
  readonly output?: string;
}

/** A written initramfs. */
export interface BuiltInitramfs {
  readonly path: string;
  /** Size of the gzipped image in bytes. */
  readonly size: number;
  /** SHA-256 of the uncompressed cpio archive. */
  readonly sha256: string;
  readonly mode: GuestMode;
  /** Number of archive members. */
  readonly entries: number;
}

/** Inputs of {@link composeInitramfs}, already read into memory. */
export interface InitramfsContents {
  /** `uname -r` of the kernel, naming `/lib/modules/<release>`. */
  readonly kernelRelease: string;
  readonly busybox: Uint8Array;
  /** Modules in load order, uncompressed. */
  readonly modules: readonly { readonly name: string; readonly data: Uint8Array }[];
  /** `modules.dep` with paths relative to `/lib/modules/<release>`. */
  readonly modulesDep: string;
  readonly mode?: GuestMode;
  readonly exit?: GuestExitAction;
  readonly script?: string;
  readonly extraFiles?: readonly CpioEntry[];
}

function normalPath(path: string): string {
  return path.replace(/^\/+/, '').replace(/\/+$/, '');
}

function validateMode(mode: GuestMode, exit: GuestExitAction, script: string | undefined): void {
  if (!GUEST_MODES.includes(mode)) {
    throw new GuestError(
      'INVALID_OPTIONS',
      `unknown guest mode ${JSON.stringify(mode)} (expected shell, script or demo)`,
    );
  }
  if (!GUEST_EXIT_ACTIONS.includes(exit)) {
    throw new GuestError(
      'INVALID_OPTIONS',
      `unknown guest exit action ${JSON.stringify(exit)} (expected reboot, poweroff or shell)`,
    );
  }
  if (mode === 'script' && script === undefined) {
    throw new GuestError('INVALID_OPTIONS', 'mode script needs a script (stored as /test.sh)');
  }
}

/**
 * Lists the members of a guest initramfs, parents before children, in a stable order: the same
 * inputs always give the same archive.
 */
export function composeInitramfs(contents: InitramfsContents): CpioEntry[] {
  const mode = contents.mode ?? 'shell';
  const exit = contents.exit ?? 'reboot';
  validateMode(mode, exit, contents.script);
  const moduleDir = `lib/modules/${contents.kernelRelease}`;
  const entries = new Map<string, CpioEntry>();
  const put = (entry: CpioEntry): void => {
    entries.set(normalPath(entry.path), entry);
  };

  for (const dir of [
    'bin',
    'dev',
    'etc',
    'etc/virtkit',
    'mnt',
    'proc',
    'run',
    'sbin',
    'sys',
    'usr',
    'usr/bin',
    'usr/sbin',
    'var',
  ]) {
    put({ type: 'directory', path: dir });
  }
  put({ type: 'directory', path: 'root', mode: 0o700 });
  put({ type: 'directory', path: 'tmp', mode: 0o1777 });
  // The kernel opens /dev/console for init's stdio before /init can mount devtmpfs.
  put({ type: 'char-device', path: 'dev/console', major: 5, minor: 1, mode: 0o600 });
  put({ type: 'char-device', path: 'dev/null', major: 1, minor: 3, mode: 0o666 });
  put({ type: 'file', path: 'bin/busybox', data: contents.busybox, mode: 0o755 });
  put({ type: 'symlink', path: 'bin/sh', target: 'busybox' });
  put({ type: 'file', path: 'init', data: createInitScript({ mode, exit }), mode: 0o755 });
  put({ type: 'file', path: 'etc/passwd', data: 'root:x:0:0:root:/root:/bin/sh\n' });
  put({ type: 'file', path: 'etc/group', data: 'root:x:0:\n' });
  put({
    type: 'file',
    path: 'etc/profile',
    data: "export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='virtkit:\\w\\$ '\n",
  });
  put({
    type: 'file',
    path: GUEST_MODULE_LIST,
    data: `# module file — loaded in this order by /init\n${contents.modules
      .map((module) => `${module.name} /${moduleDir}/${module.name}.ko\n`)
      .join('')}`,
  });
  for (const module of contents.modules) {
    put({ type: 'file', path: `${moduleDir}/${module.name}.ko`, data: module.data });
  }
  put({ type: 'file', path: `${moduleDir}/modules.dep`, data: contents.modulesDep });
  if (contents.script !== undefined) {
    put({ type: 'file', path: 'test.sh', data: contents.script, mode: 0o755 });
  }
  for (const extra of contents.extraFiles ?? []) put(extra);

  // Every parent directory must come before its children: add missing ones, then sort, which
  // puts each path after all of its prefixes.
  for (const path of [...entries.keys()]) {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      const existing = entries.get(parent);
      if (existing === undefined) put({ type: 'directory', path: parent });
      else if (existing.type !== 'directory') {
        throw new GuestError(
          'INVALID_OPTIONS',
          `initramfs path ${path} is inside ${parent}, which is not a directory`,
        );
      }
    }
  }
  return [...entries.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, entry]) => entry);
}

async function resolveExtraFile(file: GuestFile): Promise<CpioEntry> {
  if (file.type !== 'host-file') return file;
  try {
    const [data, info] = await Promise.all([readFile(file.source), stat(file.source)]);
    return { type: 'file', path: file.path, data, mode: file.mode ?? info.mode & 0o7777 };
  } catch (error) {
    throw new GuestError(
      'INVALID_OPTIONS',
      `cannot read host file ${file.source} for ${file.path}: ${(error as Error).message}`,
      {
        cause: error,
      },
    );
  }
}

/**
 * Writes a gzipped cpio initramfs for a prepared guest (see prepareGuest). The image is
 * reproducible: the same guest and options give the same bytes.
 *
 * @example
 * ```ts
 * const { path } = await buildInitramfs({
 *   arch: 'x86_64',
 *   mode: 'script',
 *   script: 'ls /dev/vda && ip link show eth0',
 * });
 * ```
 */
export async function buildInitramfs(options: BuildInitramfsOptions = {}): Promise<BuiltInitramfs> {
  const arch = options.arch ?? 'x86_64';
  const dir = options.dir ?? defaultGuestDir(arch);
  const mode = options.mode ?? 'shell';
  const exit = options.exit ?? 'reboot';
  validateMode(mode, exit, options.script);
  const extraFiles = await Promise.all((options.extraFiles ?? []).map(resolveExtraFile));

  const contents = await withCacheLock(dir, async () => {
    const guest: PreparedGuest = await readPreparedGuest({ arch, dir });
    return {
      kernelRelease: guest.kernelRelease,
      busybox: await readFile(guest.busybox),
      modules: await Promise.all(
        guest.modules.map(async (module) => ({
          name: module.name,
          data: await readFile(module.file),
        })),
      ),
      modulesDep: await readFile(guest.modulesDep, 'utf8'),
    };
  });
  const entries = composeInitramfs({
    ...contents,
    mode,
    exit,
    ...(options.script === undefined ? {} : { script: options.script }),
    extraFiles,
  });
  const archive = encodeCpio(entries);
  const sha256 = createHash('sha256').update(archive).digest('hex');
  const custom = options.script !== undefined || extraFiles.length > 0 || exit !== 'reboot';
  const path =
    options.output ??
    join(
      dir,
      custom ? `initramfs-${mode}-${sha256.slice(0, 12)}.cpio.gz` : `initramfs-${mode}.cpio.gz`,
    );

  if (options.output === undefined && custom && existsSync(path)) {
    return { path, size: (await stat(path)).size, sha256, mode, entries: entries.length };
  }
  const compressed = await new Promise<Buffer>((resolve, reject) =>
    gzip(archive, { level: 6 }, (error, result) => (error ? reject(error) : resolve(result))),
  );
  // Write then rename, so a guest booting from `path` in another process never sees half a file.
  const temporary = `${path}.${process.pid}.tmp`;
  try {
    await writeFile(temporary, compressed);
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  return { path, size: compressed.length, sha256, mode, entries: entries.length };
}
