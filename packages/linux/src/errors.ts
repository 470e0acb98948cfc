/**
 * Errors of @virtkit/linux. Every failed system call becomes a {@link LinuxError} carrying the
 * errno both as its symbolic name (`code`, like Node's own `SystemError`) and as a number.
 */

import { constants } from 'node:os';
import { getSystemErrorMap } from 'node:util';

const errnoNames = new Map<number, string>();
// node:os carries the host's errno table. Several names share a number (EAGAIN/EWOULDBLOCK,
// ENOTSUP/EOPNOTSUPP, EDEADLK/EDEADLOCK); the first one listed here wins, matching what Linux
// man pages and strace print.
for (const preferred of ['EAGAIN', 'EOPNOTSUPP', 'EDEADLK']) {
  const value = (constants.errno as Record<string, number | undefined>)[preferred];
  if (value !== undefined) errnoNames.set(value, preferred);
}
for (const [name, value] of Object.entries(constants.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}

/** Returns the symbolic name of an errno value (`9` → `'EBADF'`), or `'E<number>'` if unknown. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

/** Returns the errno value of a symbolic name (`'EBADF'` → `9`), or `undefined` if unknown. */
export function errnoValue(name: string): number | undefined {
  return (constants.errno as Record<string, number | undefined>)[name];
}

/**
 * A system call failed.
 *
 * @example
 * ```ts
 * try {
 *   close(12345);
 * } catch (error) {
 *   if (error instanceof LinuxError && error.code === 'EBADF') console.log(error.syscall); // 'close'
 * }
 * ```
 */
export class LinuxError extends Error {
  override readonly name = 'LinuxError';
  /** Symbolic errno name, e.g. `'EAGAIN'`, `'EBADF'`. */
  readonly code: string;
  /** Positive errno number, e.g. `11` for `EAGAIN`. */
  readonly errno: number;
  /** The failing system call, e.g. `'pread'`, or `'ioctl(TUNSETIFF)'`. */
  readonly syscall: string;
  /** The path involved, when the call took one (absent otherwise). */
  declare readonly path?: string;

  /**
   * @param errno - positive errno number
   * @param syscall - name of the failing call
   * @param options - `path` for path-taking calls, `detail` replaces the default
   *   `strerror`-style explanation, `cause` chains an underlying error
   */
  constructor(
    errno: number,
    syscall: string,
    options: { path?: string | undefined; detail?: string | undefined; cause?: unknown } = {},
  ) {
    const code = errnoName(errno);
    const where = options.path === undefined ? syscall : `${syscall} ${options.path}`;
    super(`${where} failed: ${options.detail ?? describeErrno(errno)} (${code})`, {
      cause: options.cause,
    });
    this.code = code;
    this.errno = errno;
    this.syscall = syscall;
    if (options.path !== undefined) this.path = options.path;
  }
}

// libuv's table (through node:util) has sentence-style messages for the errnos it knows.
const systemErrors = getSystemErrorMap();

function describeErrno(errno: number): string {
  return systemErrors.get(-errno)?.[1] ?? `error ${errno}`;
}
