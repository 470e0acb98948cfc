/**
 * The guest cache directory: where it is, its manifest (`guest.json`) and a lock so that several
 * processes (parallel test workers) can prepare and read the same cache safely.
 */

import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { GuestError } from './errors.js';

/** Guest architectures this package can prepare. */
export type GuestArch = 'x86_64' | 'riscv64';

/** Every {@link GuestArch}, for validation. */
export const GUEST_ARCHES: readonly GuestArch[] = ['x86_64', 'riscv64'];

/**
 * The default cache directory of an architecture: `$VIRTKIT_GUEST_CACHE/<arch>` if that variable
 * is set, else `$XDG_CACHE_HOME/virtkit/guest/<arch>`, else `~/.cache/virtkit/guest/<arch>`.
 */
export function defaultGuestDir(arch: GuestArch, env: NodeJS.ProcessEnv = process.env): string {
  const override = env.VIRTKIT_GUEST_CACHE;
  if (override !== undefined && override !== '') return join(override, arch);
  const cacheHome =
    env.XDG_CACHE_HOME !== undefined && env.XDG_CACHE_HOME !== ''
      ? env.XDG_CACHE_HOME
      : join(homedir(), '.cache');
  return join(cacheHome, 'virtkit', 'guest', arch);
}

/** Version of the manifest layout; a cache with another version is prepared again. */
export const MANIFEST_FORMAT = 1;

/** Name of the manifest file inside the cache directory. */
export const MANIFEST_NAME = 'guest.json';

/** A module as recorded in the manifest. Paths are relative to the cache directory. */
export interface ManifestModule {
  readonly name: string;
  readonly file: string;
  readonly deps: readonly string[];
}

/** Contents of `guest.json`, written last by prepareGuest. Paths are relative to the cache. */
export interface GuestManifest {
  readonly format: typeof MANIFEST_FORMAT;
  readonly arch: GuestArch;
  readonly suite: string;
  readonly debianArch: string;
  readonly kernel: {
    readonly package: string;
    readonly version: string;
    /** `uname -r` of the kernel, the name of its modules directory. */
    readonly release: string;
    readonly file: string;
    /** The kernel's build configuration (`/boot/config-*`), kept for reference. */
    readonly config?: string;
  };
  readonly busybox: { readonly package: string; readonly version: string; readonly file: string };
  readonly modules: {
    /** What was asked for (normalized names). */
    readonly requested: readonly string[];
    /** Requested modules built into this kernel. */
    readonly builtin: readonly string[];
    /** Modules to load, in load order. */
    readonly load: readonly ManifestModule[];
    /** Where the dependency information came from. */
    readonly source: 'modules.dep' | 'modinfo';
    /** `modules.dep` written for `load`, relative to the cache. */
    readonly dep: string;
  };
}

/** Reads the manifest, or undefined if it is missing, unreadable or of another format/arch. */
export async function readManifest(
  dir: string,
  arch: GuestArch,
): Promise<GuestManifest | undefined> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(join(dir, MANIFEST_NAME), 'utf8'));
  } catch {
    return undefined;
  }
  const manifest = parsed as Partial<GuestManifest> | null;
  if (!manifest || manifest.format !== MANIFEST_FORMAT || manifest.arch !== arch) return undefined;
  return manifest as GuestManifest;
}

/** Writes the manifest atomically (readers see the old or the new one, never half of one). */
export async function writeManifest(dir: string, manifest: GuestManifest): Promise<void> {
  const temporary = join(dir, `${MANIFEST_NAME}.${process.pid}.tmp`);
  await writeFile(temporary, `${JSON.stringify(manifest, null, 2)}\n`);
  await rename(temporary, join(dir, MANIFEST_NAME));
}

/** True if every file the manifest names exists and is not empty. */
export async function manifestFilesPresent(dir: string, manifest: GuestManifest): Promise<boolean> {
  const files = [
    manifest.kernel.file,
    manifest.busybox.file,
    manifest.modules.dep,
    ...manifest.modules.load.map((module) => module.file),
  ];
  for (const file of files) {
    try {
      const info = await stat(join(dir, file));
      if (!info.isFile() || (info.size === 0 && file !== manifest.modules.dep)) return false;
    } catch {
      return false;
    }
  }
  return true;
}

interface LockOwner {
  readonly pid: number;
  readonly host: string;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Options of {@link withCacheLock}. */
export interface LockOptions {
  /** Give up after this long; default 10 minutes (a first download can take a while). */
  readonly timeoutMs?: number;
  /** Called once if the lock is busy, before waiting. */
  readonly onWait?: (owner: string) => void;
}

/**
 * Runs `task` holding `<dir>/.lock` (a directory: mkdir is atomic on every filesystem). A lock
 * left by a dead process on this host is taken over; a live holder is waited for.
 */
export async function withCacheLock<T>(
  dir: string,
  task: () => Promise<T>,
  options: LockOptions = {},
): Promise<T> {
  await mkdir(dir, { recursive: true });
  const lock = join(dir, '.lock');
  const deadline = Date.now() + (options.timeoutMs ?? 600_000);
  let told = false;
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    let owner: LockOwner | undefined;
    try {
      owner = JSON.parse(await readFile(join(lock, 'owner'), 'utf8')) as LockOwner;
    } catch {
      // Being created right now, or left without an owner file by a crash.
      const age = Date.now() - (await stat(lock).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs;
      if (age > 30_000) await rm(lock, { recursive: true, force: true });
    }
    if (owner && owner.host === hostname() && !processAlive(owner.pid)) {
      await rm(lock, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new GuestError(
        'CACHE_LOCKED',
        `guest cache ${dir} is locked by ${owner ? `process ${owner.pid} on ${owner.host}` : 'another process'}; remove ${lock} if that process is gone`,
      );
    }
    if (!told) {
      told = true;
      options.onWait?.(owner ? `process ${owner.pid} on ${owner.host}` : 'another process');
    }
    await sleep(100);
  }
  try {
    await writeFile(join(lock, 'owner'), JSON.stringify({ pid: process.pid, host: hostname() }));
    return await task();
  } finally {
    await rm(lock, { recursive: true, force: true });
  }
}
