/**
 * Errors of the `virtkit` command. A {@link UsageError} is a mistake on the command line: one line
 * on stderr and exit status 2.
 */

import { VirtkitError } from '@virtkit/core';

/** Exit statuses of the `virtkit` command. */
export const ExitCode = {
  /** Done: the front-end went away, or SIGTERM/SIGINT. */
  OK: 0,
  /** Something failed at run time (a device could not be created, a socket not opened). */
  FAILURE: 1,
  /** Bad command line: unknown command or option, invalid device options. */
  USAGE: 2,
} as const;

/** A command-line mistake (exit status 2). */
export class UsageError extends VirtkitError {
  override readonly name = 'UsageError';

  constructor(message: string) {
    super('CLI_USAGE', message);
  }
}
