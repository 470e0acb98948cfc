import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

// The core README shows this example's device.ts as the way to write a plugin; keep them equal
// so the README's example is always the tested code.
describe('core README example', () => {
  it('is exactly examples/rng-device/src/device.ts', () => {
    const readme = readFileSync(
      new URL('../../../packages/core/README.md', import.meta.url),
      'utf8',
    );
    const marker = '<!-- example: examples/rng-device/src/device.ts -->';
    const start = readme.indexOf(marker);
    expect(start, 'README marker present').toBeGreaterThan(-1);
    const block = /```ts\n([\s\S]*?)```/.exec(readme.slice(start))?.[1];
    const source = readFileSync(new URL('./device.ts', import.meta.url), 'utf8');
    expect(block).toBe(source);
  });
});
