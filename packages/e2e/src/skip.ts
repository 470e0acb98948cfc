/**
 * Why a real-guest test cannot run here, as a message (undefined when it can). Tests print the
 * message and skip rather than fail, so that a machine without QEMU or root still runs the rest.
 */

import { accessSync, constants, type Dirent, readdirSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { readPreparedGuest } from '@virtkit/guest';
import { repositoryRoot, resolveVirtkitCli } from './backend.js';

/** True if `name` is an executable on PATH. */
export function onPath(name: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    if (dir === '') return false;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Reasons every real-guest test shares: the slow-test switch, QEMU, and a guest to boot. */
export async function guestSkipReason(): Promise<string | undefined> {
  if (process.env.VIRTKIT_SKIP_SLOW === '1')
    return 'VIRTKIT_SKIP_SLOW=1 (real-guest tests are slow)';
  if (!onPath('qemu-system-x86_64')) {
    return 'qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)';
  }
  const cached = await readPreparedGuest({ arch: 'x86_64' }).then(
    () => true,
    () => false,
  );
  if (!cached && !['apt-get', 'apt-cache', 'dpkg-deb'].every(onPath)) {
    return 'no cached x86_64 guest, and apt-get/apt-cache/dpkg-deb are missing to fetch one';
  }
  return undefined;
}

/** Network tests make namespaces and TAP devices: root (CAP_NET_ADMIN) and iproute2. */
export function netnsSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'network namespaces need root (CAP_NET_ADMIN)';
  if (!onPath('ip')) return 'ip (iproute2) is not installed';
  return undefined;
}

/** Our vhost-user backend needs the virtkit CLI. Warns (once) when its build looks stale. */
export function virtkitSkipReason(): string | undefined {
  const cli = resolveVirtkitCli();
  if (!cli.ok) return `the virtkit CLI is not available: ${cli.reason}`;
  if (!staleChecked) {
    staleChecked = true;
    const entry = cli.args[0];
    const newer = entry === undefined ? undefined : newerSource(entry);
    if (newer !== undefined) {
      console.warn(
        `[e2e] warning: ${newer} is newer than the built CLI ${entry}; run pnpm build to test the current code`,
      );
    }
  }
  return undefined;
}

let staleChecked = false;

/** Packages the CLI bundles from their dist builds. */
const CLI_PACKAGES = [
  'cli',
  'vhost-user',
  'core',
  'linux',
  'device-blk',
  'device-net',
  'device-console',
];

/** A source file of the CLI's packages modified after `built`, if any. */
function newerSource(built: string): string | undefined {
  let builtAt: number;
  try {
    builtAt = statSync(built).mtimeMs;
  } catch {
    return undefined;
  }
  const newer = (dir: string): string | undefined => {
    let entries: Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return undefined;
    }
    for (const entry of entries) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        const found = newer(path);
        if (found) return found;
      } else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.test.ts')) {
        if (statSync(path).mtimeMs > builtAt) return path;
      }
    }
    return undefined;
  };
  for (const pkg of CLI_PACKAGES) {
    const found = newer(join(repositoryRoot(), 'packages', pkg, 'src'));
    if (found) return found;
  }
  return undefined;
}

/** qemu-storage-daemon is the reference vhost-user-blk backend. */
export function storageDaemonSkipReason(): string | undefined {
  return onPath('qemu-storage-daemon')
    ? undefined
    : 'qemu-storage-daemon is not installed (apt-get install qemu-system-common)';
}

/** Prints why a group of tests is skipped (vitest shows skipped tests without a reason). */
export function reportSkip(what: string, reason: string | undefined): void {
  if (reason !== undefined) console.warn(`[e2e] skipping ${what}: ${reason}`);
}
