import type { ProtocolViolation, ViolationCode } from './errors.js';

/** Counts guest protocol violations by code and keeps the most recent ones for diagnostics. */
export class ViolationCounter {
  readonly #counts = new Map<ViolationCode, number>();
  readonly #recent: ProtocolViolation[] = [];
  #total = 0;
  /** How many recent violations {@link recent} keeps. */
  static readonly RECENT_LIMIT = 32;

  /** Records one violation. */
  record(violation: ProtocolViolation): void {
    this.#total++;
    this.#counts.set(violation.code, (this.#counts.get(violation.code) ?? 0) + 1);
    if (this.#recent.length === ViolationCounter.RECENT_LIMIT) this.#recent.shift();
    this.#recent.push(violation);
  }

  /** Violations recorded with `code` (all of them when no code is given). */
  count(code?: ViolationCode): number {
    return code === undefined ? this.#total : (this.#counts.get(code) ?? 0);
  }

  /** Counts by code, as plain data. */
  toJSON(): Record<string, number> {
    return Object.fromEntries(this.#counts);
  }

  /** The most recent violations, oldest first. */
  recent(): readonly ProtocolViolation[] {
    return this.#recent;
  }
}
