import { describe, expect, it } from 'vitest';
import { readElfDynamic } from './debian-tools.js';

describe('readElfDynamic', () => {
  it('lists the shared libraries the running node binary needs', () => {
    const { needed } = readElfDynamic(process.execPath);
    expect(needed.some((name) => /^libc\.so\.\d+$/.test(name))).toBe(true);
  });

  it('refuses a file that is not ELF', () => {
    expect(() => readElfDynamic(new URL(import.meta.url).pathname)).toThrow(/not a 64-bit/);
  });
});
