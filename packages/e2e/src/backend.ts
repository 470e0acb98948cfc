/**
 * vhost-user backends the guests connect to: ours (`virtkit vhost-user --socket PATH --device
 * TYPE,...`) and qemu-storage-daemon's vhost-user-blk export (the C peer we compare against and
 * the reference that shows a failing scenario is not the harness's fault).
 */

import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { E2eError, outputTail } from './errors.js';
import { type ExitStatus, ManagedProcess } from './process.js';

/** A backend process serving one device on one Unix socket. */
export interface VhostUserBackend {
  readonly socket: string;
  readonly process: ManagedProcess;
  /** SIGTERM (then SIGKILL after a grace period); resolves when the process is gone. */
  stop(signal?: NodeJS.Signals): Promise<ExitStatus>;
  /**
   * Resolves once a frontend (QEMU) has connected to the socket: an accepted connection on the
   * socket's path shows up in /proc/PID/net/unix (the backend's network namespace's view).
   */
  connected(timeoutMs: number): Promise<void>;
}

/** The repository root (this file is packages/e2e/src/backend.ts, or dist/*.js when bundled). */
export function repositoryRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'pnpm-workspace.yaml'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new E2eError('INVALID_OPTIONS', 'repository root not found');
    dir = parent;
  }
  return dir;
}

/** How to run the `virtkit` CLI, or why it cannot be run. */
export type CliResolution =
  | { readonly ok: true; readonly command: string; readonly args: readonly string[] }
  | { readonly ok: false; readonly reason: string };

/**
 * Finds the `virtkit` CLI: `$VIRTKIT_CLI` (a program, or a `.js`/`.mjs` file run with this
 * Node), else the `virtkit` bin of packages/cli (built by `pnpm build`).
 */
export function resolveVirtkitCli(): CliResolution {
  const override = process.env.VIRTKIT_CLI;
  if (override) {
    return /\.[cm]?js$/.test(override)
      ? { ok: true, command: process.execPath, args: [resolve(override)] }
      : { ok: true, command: override, args: [] };
  }
  const cliDir = join(repositoryRoot(), 'packages', 'cli');
  const manifestPath = join(cliDir, 'package.json');
  if (!existsSync(manifestPath)) {
    return { ok: false, reason: 'packages/cli does not exist yet' };
  }
  const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as {
    bin?: string | Record<string, string>;
  };
  const bin = typeof manifest.bin === 'string' ? manifest.bin : manifest.bin?.virtkit;
  if (bin === undefined) return { ok: false, reason: 'packages/cli has no "virtkit" bin' };
  const entry = join(cliDir, bin);
  if (!existsSync(entry)) {
    return {
      ok: false,
      reason: `${entry} is missing (build it: pnpm build)`,
    };
  }
  return { ok: true, command: process.execPath, args: [entry] };
}

/** Options of {@link startVirtkitBackend}. */
export interface VirtkitBackendOptions {
  readonly socket: string;
  /** The `--device` value: `blk,path=IMG,readonly=on`, `net,tap=vk0`... */
  readonly device: string;
  /** Run inside this network namespace (a TAP backend opens its interface there). */
  readonly netns?: string;
  readonly label?: string;
  readonly onOutput?: (text: string) => void;
  /** How long to wait for the socket; default 15 s. */
  readonly readyTimeoutMs?: number;
  /** Extra environment for the backend (e.g. a debug switch). */
  readonly env?: Readonly<Record<string, string>>;
  /** More arguments for `virtkit vhost-user` (`--verbose` is added when VIRTKIT_E2E_VERBOSE=1). */
  readonly extraArgs?: readonly string[];
}

/** Starts `virtkit vhost-user --socket PATH --device DEVICE` and waits until it listens. */
export async function startVirtkitBackend(
  options: VirtkitBackendOptions,
): Promise<VhostUserBackend> {
  const cli = resolveVirtkitCli();
  if (!cli.ok) throw new E2eError('TOOL_MISSING', `cannot run the virtkit CLI: ${cli.reason}`);
  rmSync(options.socket, { force: true });
  const proc = ManagedProcess.start({
    label: options.label ?? `virtkit vhost-user ${options.device.split(',')[0]}`,
    command: cli.command,
    args: [
      ...cli.args,
      'vhost-user',
      '--socket',
      options.socket,
      '--device',
      options.device,
      ...(process.env.VIRTKIT_E2E_VERBOSE === '1' ? ['--verbose'] : []),
      ...(options.extraArgs ?? []),
    ],
    stdin: 'ignore',
    ...(options.netns !== undefined ? { netns: options.netns } : {}),
    ...(options.onOutput !== undefined ? { onOutput: options.onOutput } : {}),
    ...(options.env !== undefined ? { env: options.env } : {}),
  });
  return listening(proc, options.socket, options.readyTimeoutMs ?? 15_000);
}

/** Options of {@link startStorageDaemon}. */
export interface StorageDaemonOptions {
  readonly socket: string;
  readonly image: string;
  readonly readonly?: boolean;
  readonly numQueues?: number;
  /** Open the image with O_DIRECT (`cache.direct=on`); default false. */
  readonly direct?: boolean;
  /** Pass the guest's discards on to the image (`discard=unmap`); default false. */
  readonly discard?: boolean;
  /** The export's `logical-block-size`; default 512. */
  readonly blockSize?: number;
  readonly label?: string;
  readonly readyTimeoutMs?: number;
}

/** Starts qemu-storage-daemon with a vhost-user-blk export of a raw image. */
export async function startStorageDaemon(options: StorageDaemonOptions): Promise<VhostUserBackend> {
  rmSync(options.socket, { force: true });
  const ro = options.readonly === true;
  const proc = ManagedProcess.start({
    label: options.label ?? 'qemu-storage-daemon',
    command: 'qemu-storage-daemon',
    args: [
      '--blockdev',
      `driver=file,node-name=file0,filename=${options.image.replaceAll(',', ',,')}` +
        `,cache.direct=${options.direct ? 'on' : 'off'}${ro ? ',read-only=on' : ''}` +
        `${options.discard ? ',discard=unmap' : ''}`,
      '--export',
      `type=vhost-user-blk,id=export0,node-name=file0,addr.type=unix,addr.path=${options.socket.replaceAll(',', ',,')}` +
        `,writable=${ro ? 'off' : 'on'}${options.numQueues !== undefined ? `,num-queues=${options.numQueues}` : ''}` +
        `${options.blockSize !== undefined ? `,logical-block-size=${options.blockSize}` : ''}`,
    ],
    stdin: 'ignore',
  });
  return listening(proc, options.socket, options.readyTimeoutMs ?? 15_000);
}

async function listening(
  proc: ManagedProcess,
  socket: string,
  timeoutMs: number,
): Promise<VhostUserBackend> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!proc.running) {
      throw new E2eError(
        'PROCESS_EXITED',
        `${proc.label} exited (${proc.status?.signal ?? `code ${proc.status?.code}`}) before listening on ${socket}:\n${outputTail(proc.output)}`,
      );
    }
    if (isSocket(socket)) break;
    if (Date.now() > deadline) {
      await proc.stop({ signal: 'SIGKILL' });
      throw new E2eError(
        'TIMEOUT',
        `${proc.label} did not listen on ${socket} within ${timeoutMs} ms:\n${outputTail(proc.output)}`,
      );
    }
    await new Promise((wake) => setTimeout(wake, 20));
  }
  return {
    socket,
    process: proc,
    stop: (signal = 'SIGTERM') => proc.stop({ signal }),
    connected: (timeout) => waitForConnection(proc, socket, timeout),
  };
}

/** Socket state "connected" in /proc/net/unix (SS_CONNECTED). */
const UNIX_CONNECTED = '03';

async function waitForConnection(
  proc: ManagedProcess,
  socket: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let table = '';
    try {
      table = readFileSync(`/proc/${proc.pid}/net/unix`, 'utf8');
    } catch {
      // the process is gone; reported below
    }
    // Num RefCount Protocol Flags Type St Inode Path
    const connected = table.split('\n').some((line) => {
      const fields = line.trim().split(/\s+/);
      return fields[5] === UNIX_CONNECTED && fields[7] === socket;
    });
    if (connected) return;
    if (!proc.running || Date.now() > deadline) {
      throw new E2eError(
        proc.running ? 'TIMEOUT' : 'PROCESS_EXITED',
        `no frontend connected to ${socket} (${proc.label}) within ${timeoutMs} ms:\n${outputTail(proc.output)}`,
      );
    }
    await new Promise((wake) => setTimeout(wake, 50));
  }
}

function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}
