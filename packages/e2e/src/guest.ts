/**
 * The guest every e2e scenario boots: @virtkit/guest's x86_64 Debian kernel and busybox, with an
 * initramfs that runs one scenario's script.
 */

import {
  buildInitramfs,
  type GuestFile,
  type GuestProgress,
  type PreparedGuest,
  prepareGuest,
} from '@virtkit/guest';

/** Prepares (or finds in the cache) the x86_64 guest. */
export function prepareX86Guest(
  onProgress?: (progress: GuestProgress) => void,
): Promise<PreparedGuest> {
  return prepareGuest({ arch: 'x86_64', ...(onProgress ? { onProgress } : {}) });
}

/** Builds (or reuses, by content hash) an initramfs whose /init runs `script`. */
export async function scriptInitramfs(
  script: string,
  extraFiles: readonly GuestFile[] = [],
): Promise<string> {
  const { path } = await buildInitramfs({ arch: 'x86_64', mode: 'script', script, extraFiles });
  return path;
}

/** Lines the guest printed as `E2E <key> <rest>`, for assertions: key → rest (last one wins). */
export function guestReports(output: string): Map<string, string> {
  const reports = new Map<string, string>();
  for (const match of output.matchAll(/^E2E (\S+) ?(.*?)\r?$/gm)) {
    reports.set(match[1]!, match[2]!);
  }
  return reports;
}
