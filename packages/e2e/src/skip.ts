/**
 * Why a real-guest test cannot run here, as a message (undefined when it can). Tests print the
 * message and skip rather than fail, so that a machine without QEMU or root still runs the rest.
 */

import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { readPreparedGuest } from '@virtkit/guest';
import { resolveVirtkitCli } from './backend.js';

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

/** Our vhost-user backend needs the virtkit CLI. */
export function virtkitSkipReason(): string | undefined {
  const cli = resolveVirtkitCli();
  return cli.ok ? undefined : `the virtkit CLI is not available: ${cli.reason}`;
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
