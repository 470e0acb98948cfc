// Core runs in Node and in browsers, so it compiles against the ECMAScript library alone
// (no DOM, no @types/node). These are the few host globals it uses, available in both.

/** @virtkit/core's version, baked in by the build (tsup `define`) and by the test config. */
declare const __VIRTKIT_CORE_VERSION__: string;

declare function setTimeout(callback: () => void, ms?: number): unknown;
declare function clearTimeout(handle: unknown): void;
declare function queueMicrotask(callback: () => void): void;
declare const console: {
  log(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
};
