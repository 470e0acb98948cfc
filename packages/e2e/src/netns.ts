/**
 * Network namespaces for guest networking tests. Every packet a test sends stays inside a
 * namespace the test made (a TAP device with an address, and the host-side programs run with
 * `ip netns exec`), so tests never touch the machine's own interfaces and can run in parallel.
 */

import { execFileSync } from 'node:child_process';
import { onCleanup } from './cleanup.js';
import { runCommand } from './process.js';

/** Prefix of every namespace this harness creates: `virtkit-e2e-<pid>-<n>`. */
export const NETNS_PREFIX = 'virtkit-e2e';

let created = 0;

/** Options of {@link NetworkNamespace.addTap}. */
export interface TapOptions {
  /** Interface name, at most 15 characters; default `vk0`. */
  readonly name?: string;
  /** Host-side address with prefix length, e.g. `10.77.0.1/24`. */
  readonly address: string;
  /** Create with `multi_queue` (needed when the backend opens several queues). */
  readonly multiQueue?: boolean;
}

/** A network namespace owned by this process, deleted by {@link destroy} or at exit. */
export class NetworkNamespace {
  private readonly unregister: () => void;
  private destroyed = false;

  private constructor(readonly name: string) {
    this.unregister = onCleanup(`delete network namespace ${name}`, () => this.destroy());
  }

  /**
   * Creates a namespace with loopback up. First deletes namespaces that earlier runs of this
   * harness left behind (their owning process no longer exists).
   */
  static async create(): Promise<NetworkNamespace> {
    sweepStaleNamespaces();
    created += 1;
    const name = `${NETNS_PREFIX}-${process.pid}-${created}`;
    await runCommand('ip', ['netns', 'add', name]);
    const namespace = new NetworkNamespace(name);
    try {
      await namespace.ip(['link', 'set', 'lo', 'up']);
    } catch (error) {
      namespace.destroy();
      throw error;
    }
    return namespace;
  }

  /** Runs `ip ARGS` inside the namespace. */
  ip(args: readonly string[]): Promise<string> {
    return runCommand('ip', ['-n', this.name, ...args]);
  }

  /**
   * Creates a persistent TAP interface in the namespace with `address`, and sets it up. Whoever
   * opens it (QEMU's tap netdev or our backend, both run inside the namespace) attaches to it.
   */
  async addTap(options: TapOptions): Promise<string> {
    const name = options.name ?? 'vk0';
    await this.ip([
      'tuntap',
      'add',
      'dev',
      name,
      'mode',
      'tap',
      ...(options.multiQueue ? ['multi_queue'] : []),
    ]);
    await this.ip(['addr', 'add', options.address, 'dev', name]);
    await this.ip(['link', 'set', name, 'up']);
    return name;
  }

  /**
   * Kills every process still inside the namespace, then deletes it (which destroys its TAP
   * devices). Synchronous so that it can run at process exit; safe to call twice.
   */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.unregister();
    deleteNamespace(this.name);
  }
}

function deleteNamespace(name: string): void {
  try {
    const pids = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8' })
      .split(/\s+/)
      .filter((pid) => pid !== '')
      .map(Number);
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  } catch {
    // the namespace may already be gone
  }
  try {
    execFileSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
  } catch {
    // already deleted
  }
}

/** Deletes `virtkit-e2e-<pid>-*` namespaces whose process is gone (a run that was killed). */
export function sweepStaleNamespaces(): void {
  let names: string[];
  try {
    names = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
      .split('\n')
      .map((line) => line.split(' ')[0] ?? '');
  } catch {
    return;
  }
  const pattern = new RegExp(`^${NETNS_PREFIX}-(\\d+)-\\d+$`);
  for (const name of names) {
    const pid = Number(pattern.exec(name)?.[1]);
    if (!pid || pid === process.pid || isAlive(pid)) continue;
    deleteNamespace(name);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
