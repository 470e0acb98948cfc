import { describe, it } from 'vitest';
import { checkDemoResults } from './check-results.js';
import { runDemo } from './demo.js';

// The same demo the page runs, run in Node: a failure here is in the demo, not in the browser.
describe('browser-page demo in Node', () => {
  it.each([false, true])('runs with shared memory %s', async (shared) => {
    checkDemoResults(await runDemo({ shared }), { shared });
  });
});
