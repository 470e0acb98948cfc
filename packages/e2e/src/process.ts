/**
 * Child processes the harness runs (QEMU, our backend, qemu-storage-daemon, host-side peers):
 * output captured as text, waiting for markers with a deadline, and a stop that always ends with
 * the process gone — also when the test or script that started it fails.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { onCleanup } from './cleanup.js';
import { E2eError, outputTail } from './errors.js';

/** How a process ended. */
export interface ExitStatus {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** Options of {@link ManagedProcess.start}. */
export interface StartOptions {
  /** Short name for messages (`qemu`, `backend blk`...). */
  readonly label: string;
  readonly command: string;
  readonly args: readonly string[];
  /** Run inside this network namespace (`ip netns exec NAME ...`, which execs the command). */
  readonly netns?: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** `pipe` (default) lets {@link ManagedProcess.write} type into it; `inherit` gives it our terminal. */
  readonly stdin?: 'pipe' | 'inherit' | 'ignore';
  /** Receives output as it arrives (stdout and stderr). */
  readonly onOutput?: (text: string, stream: 'stdout' | 'stderr') => void;
}

/** Where a marker was found by {@link ManagedProcess.waitFor}. */
export interface OutputMatch {
  /** The matched text (whole match; capture groups in `groups`). */
  readonly text: string;
  readonly groups: readonly (string | undefined)[];
  /** Offset just past the match: pass it as `from` to wait for a later marker. */
  readonly end: number;
}

interface Waiter {
  readonly pattern: RegExp;
  readonly from: number;
  readonly resolve: (match: OutputMatch) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/** A running child process with its output kept in memory. */
export class ManagedProcess {
  readonly label: string;
  readonly child: ChildProcess;
  /** Resolves when the process has ended (never rejects; a spawn failure is code 127). */
  readonly exited: Promise<ExitStatus>;
  /** Everything it printed on stdout and stderr so far, interleaved as it arrived. */
  output = '';
  /** Set once the process has ended. */
  status: ExitStatus | undefined;
  private spawnError: Error | undefined;
  private readonly waiters = new Set<Waiter>();
  private readonly unregister: () => void;

  private constructor(options: StartOptions) {
    this.label = options.label;
    const [command, args] =
      options.netns === undefined
        ? [options.command, options.args]
        : ['ip', ['netns', 'exec', options.netns, options.command, ...options.args]];
    this.child = spawn(command, args, {
      cwd: options.cwd,
      env: { ...process.env, ...options.env },
      stdio: [options.stdin ?? 'pipe', 'pipe', 'pipe'],
    });
    const pid = this.child.pid;
    this.unregister = onCleanup(`kill ${this.label}`, () => {
      if (pid !== undefined && this.status === undefined) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    });
    // Decode as UTF-8 per stream, so that a character split across two reads stays whole.
    this.child.stdout?.setEncoding('utf8');
    this.child.stderr?.setEncoding('utf8');
    const take = (stream: 'stdout' | 'stderr') => (text: string) => {
      this.output += text;
      options.onOutput?.(text, stream);
      this.checkWaiters();
    };
    this.child.stdout?.on('data', take('stdout'));
    this.child.stderr?.on('data', take('stderr'));
    // A closed pipe to a process that already exited is not an error worth crashing on.
    this.child.stdin?.on('error', () => {});
    this.exited = new Promise((resolve) => {
      this.child.on('error', (error) => {
        this.spawnError = error;
        // 'close' does not always follow a failed spawn.
        if (this.child.pid === undefined) this.finish({ code: 127, signal: null }, resolve);
      });
      this.child.on('close', (code, signal) => this.finish({ code, signal }, resolve));
    });
  }

  /** Starts a process. Never throws for a missing program: `exited` reports code 127. */
  static start(options: StartOptions): ManagedProcess {
    return new ManagedProcess(options);
  }

  /** The process id (undefined if the spawn failed). */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /** True until the process has ended. */
  get running(): boolean {
    return this.status === undefined;
  }

  /**
   * Waits until `pattern` appears in the output at or after offset `from`. Rejects with `TIMEOUT`
   * after `timeoutMs`, or `PROCESS_EXITED` if the process ends first; both carry the output tail.
   */
  waitFor(
    pattern: string | RegExp,
    options: { readonly timeoutMs: number; readonly from?: number },
  ): Promise<OutputMatch> {
    const regex =
      typeof pattern === 'string'
        ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
        : pattern;
    const found = this.search(regex, options.from ?? 0);
    if (found) return Promise.resolve(found);
    if (this.status !== undefined) return Promise.reject(this.exitedError(regex));
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        pattern: regex,
        from: options.from ?? 0,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters.delete(waiter);
          reject(
            new E2eError(
              'TIMEOUT',
              `${this.label}: no ${regex} within ${options.timeoutMs} ms; output so far:\n${outputTail(this.output)}`,
            ),
          );
        }, options.timeoutMs),
      };
      this.waiters.add(waiter);
    });
  }

  /** Writes to the process's stdin (a line typed on a guest's serial console, for instance). */
  write(text: string): void {
    this.child.stdin?.write(text);
  }

  /**
   * Ends the process: `signal` (default SIGTERM), then SIGKILL if it is still there after
   * `graceMs` (default 3000). Resolves with its exit status.
   */
  async stop(options: { signal?: NodeJS.Signals; graceMs?: number } = {}): Promise<ExitStatus> {
    if (this.status !== undefined) return this.status;
    this.signal(options.signal ?? 'SIGTERM');
    const timer = setTimeout(() => this.signal('SIGKILL'), options.graceMs ?? 3000);
    const status = await this.exited;
    clearTimeout(timer);
    return status;
  }

  /** Waits for the process to end by itself, killing it after `timeoutMs`. */
  async wait(timeoutMs: number): Promise<ExitStatus & { readonly timedOut: boolean }> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.signal('SIGKILL');
    }, timeoutMs);
    const status = await this.exited;
    clearTimeout(timer);
    return { ...status, timedOut };
  }

  private signal(signal: NodeJS.Signals): void {
    if (this.status !== undefined || this.child.pid === undefined) return;
    try {
      process.kill(this.child.pid, signal);
    } catch {
      // exited between the check and the kill
    }
  }

  private search(regex: RegExp, from: number): OutputMatch | undefined {
    const flags = regex.flags.includes('g') ? regex.flags : `${regex.flags}g`;
    const global = new RegExp(regex.source, flags);
    global.lastIndex = from;
    const match = global.exec(this.output);
    if (!match) return undefined;
    return { text: match[0], groups: match.slice(1), end: match.index + match[0].length };
  }

  private checkWaiters(): void {
    for (const waiter of this.waiters) {
      const found = this.search(waiter.pattern, waiter.from);
      if (found) {
        clearTimeout(waiter.timer);
        this.waiters.delete(waiter);
        waiter.resolve(found);
      }
    }
  }

  private exitedError(regex: RegExp): E2eError {
    const how = this.spawnError
      ? `could not start (${this.spawnError.message})`
      : `exited (${this.status?.signal ?? `code ${this.status?.code}`})`;
    return new E2eError(
      'PROCESS_EXITED',
      `${this.label} ${how} before printing ${regex}; output:\n${outputTail(this.output)}`,
    );
  }

  private finish(status: ExitStatus, resolve: (status: ExitStatus) => void): void {
    if (this.status !== undefined) return;
    this.status = status;
    this.unregister();
    for (const waiter of this.waiters) {
      clearTimeout(waiter.timer);
      waiter.reject(this.exitedError(waiter.pattern));
    }
    this.waiters.clear();
    resolve(status);
  }
}

/** Runs a command to completion and returns its stdout; throws `COMMAND_FAILED` with stderr. */
export async function runCommand(
  command: string,
  args: readonly string[],
  options: { readonly netns?: string; readonly input?: string; readonly cwd?: string } = {},
): Promise<string> {
  const proc = ManagedProcess.start({
    label: command,
    command,
    args,
    ...(options.netns !== undefined ? { netns: options.netns } : {}),
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
    stdin: options.input === undefined ? 'ignore' : 'pipe',
  });
  if (options.input !== undefined) proc.child.stdin?.end(options.input);
  let stdout = '';
  proc.child.stdout?.on('data', (text: string) => {
    stdout += text;
  });
  const status = await proc.exited;
  if (status.code !== 0) {
    throw new E2eError(
      'COMMAND_FAILED',
      `${[command, ...args].join(' ')} failed (${status.signal ?? `exit ${status.code}`}):\n${outputTail(proc.output, 10)}`,
    );
  }
  return stdout;
}
