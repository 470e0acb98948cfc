/**
 * The `virtkit` executable: runs the command line and exits with its status. SIGTERM and SIGINT
 * stop a serving command cleanly (the device settles its requests first).
 */

import { runCli } from './cli.js';

const stop = new AbortController();
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    // A second signal while stopping means "now".
    if (stop.signal.aborted) process.exit(1);
    stop.abort();
  });
}

runCli(process.argv.slice(2), {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  signal: stop.signal,
}).then(
  (status) => {
    process.exitCode = status;
    // Normally nothing is left and the process ends now, with its output flushed; should a
    // device leave a handle open, do not hang on it.
    setTimeout(() => process.exit(status), 2000).unref();
  },
  (error: unknown) => {
    process.stderr.write(
      `virtkit: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exit(1);
  },
);
