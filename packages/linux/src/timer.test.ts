import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { PreciseTimer } from './timer.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('PreciseTimer', () => {
  it('fires once, after the delay, on the event loop', async () => {
    const fired: number[] = [];
    const timer = new PreciseTimer(() => fired.push(performance.now()));
    try {
      const start = performance.now();
      timer.start(300);
      expect(timer.armed).toBe(true);
      await sleep(30);
      expect(fired).toHaveLength(1);
      expect(fired[0]! - start).toBeGreaterThanOrEqual(0.3);
      expect(timer.armed).toBe(false);
      await sleep(10);
      expect(fired).toHaveLength(1);
    } finally {
      timer.close();
    }
  });

  it('resolves below a millisecond, unlike setTimeout', async () => {
    // The shortest of several 100 µs waits: a loaded machine may stretch some of them, but
    // setTimeout could never return in under a millisecond.
    const waits: number[] = [];
    let start = 0;
    let resolveRound: () => void = () => {};
    const timer = new PreciseTimer(() => {
      waits.push(performance.now() - start);
      resolveRound();
    });
    try {
      for (let i = 0; i < 9; i++) {
        const round = new Promise<void>((resolve) => {
          resolveRound = resolve;
        });
        start = performance.now();
        timer.start(100);
        await round;
      }
      waits.sort((a, b) => a - b);
      expect(waits[0]!).toBeGreaterThanOrEqual(0.1);
      expect(waits[0]!).toBeLessThan(0.9);
    } finally {
      timer.close();
    }
  });

  it('restarting moves the expiry; cancel stops it', async () => {
    let fired = 0;
    const timer = new PreciseTimer(() => fired++);
    try {
      timer.start(20_000);
      timer.start(500);
      await sleep(15);
      expect(fired).toBe(1);
      timer.start(500);
      timer.cancel();
      expect(timer.armed).toBe(false);
      await sleep(15);
      expect(fired).toBe(1);
    } finally {
      timer.close();
    }
  });

  it('a cancel after expiry but before the callback ran suppresses it', async () => {
    let fired = 0;
    const timer = new PreciseTimer(() => fired++);
    try {
      timer.start(1);
      const until = performance.now() + 2;
      while (performance.now() < until) {
        // busy: the timer expires while the loop cannot run its callback
      }
      timer.cancel();
      await sleep(10);
      expect(fired).toBe(0);
    } finally {
      timer.close();
    }
  });

  it('refuses to start once closed', () => {
    const timer = new PreciseTimer(() => {});
    timer.close();
    timer.close();
    expect(() => timer.start(10)).toThrow(/closed/);
  });
});
