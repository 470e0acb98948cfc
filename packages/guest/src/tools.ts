/**
 * Running the few host programs this package needs (apt-get, apt-cache, dpkg-deb, xz, zstd), with
 * a clear error when one is missing and the program's own stderr when one fails.
 */

import { spawn } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import { GuestError } from './errors.js';

/** Why each tool is needed, for the "not found" message. */
const TOOL_PURPOSE: Record<string, string> = {
  'apt-get': 'download Debian packages (package "apt")',
  'apt-cache': 'resolve Debian package versions (package "apt")',
  'dpkg-deb': 'unpack Debian packages (package "dpkg")',
  xz: 'decompress .ko.xz kernel modules (package "xz-utils")',
  zstd: 'decompress .ko.zst kernel modules (package "zstd")',
};

/** Returns the absolute path of `name` on PATH, or undefined. */
export function findTool(name: string, path = process.env.PATH ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here; keep looking
    }
  }
  return undefined;
}

/** Throws `TOOL_MISSING` naming every tool in `names` that is not on PATH. */
export function requireTools(names: readonly string[]): void {
  const missing = names.filter((name) => findTool(name) === undefined);
  if (missing.length > 0) {
    const why = missing.map((name) => `${name} (to ${TOOL_PURPOSE[name] ?? 'run'})`).join(', ');
    throw new GuestError(
      'TOOL_MISSING',
      `required program${missing.length > 1 ? 's' : ''} not found on PATH: ${why}`,
    );
  }
}

/** Output of a finished command. */
export interface CommandResult {
  readonly stdout: Buffer;
  readonly stderr: string;
}

/** Options of {@link runCommand}. */
export interface RunOptions {
  readonly cwd?: string;
  /** Extra environment variables (the rest is inherited). */
  readonly env?: Readonly<Record<string, string>>;
}

/**
 * Runs a program without a shell and collects its output. A non-zero exit or a spawn failure
 * becomes `COMMAND_FAILED` with the command line and the tail of stderr in the message.
 */
export function runCommand(
  command: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: { ...process.env, LC_ALL: 'C', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => out.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => err.push(chunk));
    const line = [command, ...args].join(' ');
    child.on('error', (error: NodeJS.ErrnoException) => {
      const code = error.code === 'ENOENT' ? 'TOOL_MISSING' : 'COMMAND_FAILED';
      reject(new GuestError(code, `could not run ${command}: ${error.message}`, { cause: error }));
    });
    child.on('close', (status, signal) => {
      const stderr = Buffer.concat(err).toString();
      if (status === 0) {
        resolve({ stdout: Buffer.concat(out), stderr });
        return;
      }
      const tail = stderr.trim().split('\n').slice(-5).join('\n');
      const how = signal ? `was killed by ${signal}` : `exited with status ${status}`;
      reject(new GuestError('COMMAND_FAILED', `${line} ${how}${tail ? `:\n${tail}` : ''}`));
    });
  });
}
