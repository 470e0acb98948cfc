/**
 * One process-wide list of things to undo: child processes to kill, network namespaces to delete,
 * temporary directories to remove. Each action is synchronous so that it can also run from the
 * `exit` event, which is the last chance after a test worker or a script fails or is interrupted.
 */

interface CleanupAction {
  readonly label: string;
  readonly run: () => void;
}

const actions = new Map<number, CleanupAction>();
let nextId = 1;
let exitHookInstalled = false;

/**
 * Registers `run` to be called at process exit (or by {@link runCleanups}), newest first.
 * Returns a function that unregisters it, for the normal path where the owner cleans up itself.
 */
export function onCleanup(label: string, run: () => void): () => void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', runCleanups);
  }
  const id = nextId++;
  actions.set(id, { label, run });
  return () => {
    actions.delete(id);
  };
}

/** Runs every registered action, newest first, once. A failing action does not stop the others. */
export function runCleanups(): void {
  const pending = [...actions.entries()].reverse();
  actions.clear();
  for (const [, action] of pending) {
    try {
      action.run();
    } catch (error) {
      console.error(`[e2e] cleanup "${action.label}" failed: ${(error as Error).message}`);
    }
  }
}

/**
 * For scripts: on SIGINT, SIGTERM or SIGHUP run the cleanups and exit with 128 + signal number,
 * as a shell would report it.
 */
export function exitOnSignals(onSignal?: (signal: string) => void): void {
  const numbers: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 };
  for (const [signal, number] of Object.entries(numbers)) {
    process.once(signal, () => {
      onSignal?.(signal);
      runCleanups();
      process.exit(128 + number);
    });
  }
}
