/**
 * Errors of the e2e harness. Each has a `code`; messages name the process or command involved and
 * end with the tail of its output, because that is what one needs to see when a guest run fails.
 */

/** Codes of {@link E2eError}. */
export type E2eErrorCode =
  /** A marker did not appear in a process's output in time. */
  | 'TIMEOUT'
  /** A process ended while something still waited for its output. */
  | 'PROCESS_EXITED'
  /** A host command (ip, mkfs.ext4...) failed. */
  | 'COMMAND_FAILED'
  /** A program the harness needs is not installed. */
  | 'TOOL_MISSING'
  /** An argument or option that cannot be used. */
  | 'INVALID_OPTIONS';

/** Base error of the e2e harness. */
export class E2eError extends Error {
  override readonly name = 'E2eError';
  readonly code: E2eErrorCode;

  constructor(code: E2eErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** The last `lines` lines of a process's output, indented, for error messages. */
export function outputTail(output: string, lines = 40): string {
  const tail = output.replaceAll('\r', '').split('\n').slice(-lines);
  return tail.map((line) => `  | ${line}`).join('\n');
}
