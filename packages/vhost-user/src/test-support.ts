/**
 * Helpers shared by this package's tests: a back-end with a test front-end on a socketpair,
 * cleaned up after each test, and small waits.
 */

import { readdirSync, readlinkSync } from 'node:fs';
import type { VirtioDevice } from '@virtkit/core';
import { afterEach } from 'vitest';
import { VhostUserBackend, type VhostUserBackendOptions } from './backend.js';
import { type FrontendGuestOptions, type FrontendQueue, TestFrontend } from './testing/frontend.js';

const cleanups: (() => Promise<void> | void)[] = [];

/** Registers cleanups run after the current test (last first). */
export function onCleanup(cleanup: () => Promise<void> | void): void {
  cleanups.push(cleanup);
}

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A back-end serving `device`, a front-end on a socketpair, and the back-end's log lines. */
export interface Pair<D extends VirtioDevice> {
  readonly device: D;
  readonly backend: VhostUserBackend;
  readonly frontend: TestFrontend;
  readonly logs: string[];
}

/** Creates a back-end for `device` and a front-end connected to it (cleaned up after the test). */
export function pair<D extends VirtioDevice>(
  device: D,
  guest: FrontendGuestOptions = {},
  options: VhostUserBackendOptions = {},
): Pair<D> {
  const logs: string[] = [];
  const backend = new VhostUserBackend(device, { log: (line) => logs.push(line), ...options });
  const frontend = TestFrontend.pair(backend, guest);
  onCleanup(async () => {
    frontend.release();
    await backend.close();
    frontend.guest.release();
  });
  return { device, backend, frontend, logs };
}

/** Resolves after the event loop turned `turns` times (lets watchers and immediates run). */
export async function ticks(turns = 3): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Polls `condition` until it holds (or throws after `ms`). */
export async function until(
  condition: () => boolean,
  ms = 2000,
  what = 'condition',
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

/** Round trip on the control channel: every message sent before it has been handled. */
export async function sync(frontend: TestFrontend): Promise<void> {
  await frontend.getQueueNum();
}

/**
 * Open descriptors of this process, but for epoll instances: the runtime creates one lazily the
 * first time some facility needs it, and keeps it.
 */
export function openFds(): number {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) !== 'anon_inode:[eventpoll]';
    } catch {
      return false; // the directory's own descriptor, already closed
    }
  }).length;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Bytes of a string. */
export const text = (value: string): Uint8Array => encoder.encode(value);
/** A string from bytes. */
export const str = (bytes: Uint8Array): string => decoder.decode(bytes);
/** `value` reversed (the echo device's answer). */
export const reversed = (value: string): string => [...value].reverse().join('');

/** Sends `message` through the echo device and returns its answer. */
export async function echo(queue: FrontendQueue, message: string): Promise<string> {
  return str((await queue.send([text(message)], [message.length])).written);
}
