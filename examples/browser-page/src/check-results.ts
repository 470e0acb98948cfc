import { expect } from 'vitest';
import type { DemoResults } from './demo.js';

/**
 * The assertions both the Node run and the browser run of the demo must pass: random bytes on
 * both ring layouts (capped by the rng's maxBytes), the echo returned intact, the expected
 * negotiated features, and no protocol violation.
 */
export function checkDemoResults(results: DemoResults, expected: { shared: boolean }): void {
  expect(results.memory).toEqual({
    regions: [
      [0, 65536],
      [65536, 65536],
    ],
    shared: expected.shared,
    roundTrip: true,
    views: 2,
  });
  expect(results.plugins).toEqual(['echo', 'rng']);

  const runs = [...results.rng, ...results.echo];
  expect(runs.map((run) => `${run.device}/${run.layout}`)).toEqual([
    'rng/split',
    'rng/packed',
    'echo/split',
    'echo/packed',
  ]);
  for (const run of runs) {
    expect(run.violations, `${run.device}/${run.layout} violations`).toBe(0);
    expect(run.status, `${run.device}/${run.layout} status`).toBe(0x0f); // ...|FEATURES_OK|DRIVER_OK
    const packed = run.layout === 'packed';
    expect(run.featureNames).toEqual(
      packed
        ? ['RING_INDIRECT_DESC', 'RING_EVENT_IDX', 'VERSION_1', 'RING_PACKED']
        : ['RING_INDIRECT_DESC', 'RING_EVENT_IDX', 'VERSION_1'],
    );
    expect(run.features).toBe(packed ? '0x530000000' : '0x130000000');
    expect(run.sharedMemory, `${run.device}/${run.layout} shared memory`).toBe(
      run.device === 'echo' && expected.shared,
    );
  }

  for (const run of results.rng) {
    expect(run.requested).toEqual([32, 64]);
    expect(run.lengths).toEqual([32, 32]); // maxBytes caps both requests
    for (const hex of run.hex) {
      expect(hex).toMatch(/^[0-9a-f]{64}$/);
      // 32 random bytes hold at least 8 distinct values (all but certainly ~30).
      expect(new Set(hex.match(/../g)).size).toBeGreaterThan(8);
    }
  }
  const allRandom = results.rng.flatMap((run) => run.hex);
  expect(new Set(allRandom).size).toBe(allRandom.length);

  for (const run of results.echo) {
    expect(run.sent).toBe(`hello from a virtio device written in the page (${run.layout} ring)`);
    expect(run.received).toBe(run.sent);
    expect(run.lengths).toEqual(run.requested);
  }
}
