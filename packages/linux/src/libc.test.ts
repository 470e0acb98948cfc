import koffi from 'koffi';
import { afterEach, describe, expect, it } from 'vitest';
import { LinuxError } from './errors.js';
import { eventfd } from './eventfd.js';
import { close } from './files.js';
import { isSupportedPlatform } from './libc.js';

// Each test file gets fresh modules, so the bindings are not loaded yet when this runs.
const realPlatform = Object.getOwnPropertyDescriptor(process, 'platform')!;
afterEach(() => {
  Object.defineProperty(process, 'platform', realPlatform);
});

describe('platform check', () => {
  it('refuses to load anywhere but Linux x86_64, with a clear LinuxError', () => {
    expect(isSupportedPlatform()).toBe(true); // the machine the suite runs on
    Object.defineProperty(process, 'platform', { value: 'darwin', configurable: true });
    expect(isSupportedPlatform()).toBe(false);
    try {
      eventfd();
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(LinuxError);
      expect(error).toMatchObject({ code: 'ENOSYS', syscall: 'load' });
      expect((error as Error).message).toContain('supports Linux on x86_64 only, not darwin x64');
    }
    Object.defineProperty(process, 'platform', realPlatform);
    close(eventfd()); // loads once the platform is right
  });
});

describe('koffi settings', () => {
  it('keeps 32 asynchronous call pools resident (32 requests in flight cost no allocations)', () => {
    close(eventfd());
    expect(koffi.config().resident_async_pools).toBe(32);
  });
});
