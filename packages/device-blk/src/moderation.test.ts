import { describe, expect, it } from 'vitest';
import { InterruptModerator, type ModerationOptions } from './moderation.js';

/** A moderator on a fake clock, timer and queue; `arrivals` is what each poll finds next. */
function setup(options: Partial<ModerationOptions> = {}) {
  let now = 0;
  let fire: () => void = () => {};
  const timer = { delay: undefined as number | undefined, closed: false };
  const log: string[] = [];
  const arrivals: number[] = [];
  const moderator = new InterruptModerator(
    {
      notify: () => log.push('notify'),
      poll: () => {
        const found = arrivals.shift() ?? 0;
        log.push(`poll ${found}`);
        return found;
      },
      resume: () => log.push('resume'),
    },
    {
      timer: (callback) => {
        fire = callback;
        return {
          start: (micros) => {
            timer.delay = micros;
          },
          cancel: () => {
            timer.delay = undefined;
          },
          close: () => {
            timer.closed = true;
          },
        };
      },
      now: () => now,
      ...options,
    },
  );
  return {
    moderator,
    log,
    arrivals,
    timer,
    /** Lets `micros` pass, firing the timer if it falls due. */
    advance(micros: number) {
      now += micros / 1000;
    },
    /** Fires the started timer after its delay; returns the delay. */
    expire(): number {
      const delay = timer.delay;
      if (delay === undefined) throw new Error('timer not started');
      timer.delay = undefined;
      now += delay / 1000;
      fire();
      return delay;
    },
    take(): string[] {
      return log.splice(0);
    },
  };
}

describe('InterruptModerator', () => {
  it('probes first; a hold with no arrivals is sent after one poll and not repeated at once', () => {
    const m = setup();
    m.moderator.due();
    expect(m.moderator.holding).toBe(true);
    expect(m.take()).toEqual([]);
    expect(m.expire()).toBe(100); // the first gap, before any arrival was timed
    expect(m.take()).toEqual(['poll 0', 'resume', 'notify']);
    expect(m.moderator.holding).toBe(false);
    expect(m.moderator.stats).toEqual({ notifications: 1, held: 1, wasted: 1 });
    m.moderator.due(); // queue depth 1: the next one goes at once
    expect(m.take()).toEqual(['notify']);
    expect(m.timer.delay).toBeUndefined();
  });

  it('backs off exponentially while holds are wasted, up to probeEvery', () => {
    const m = setup({ probeEvery: 8 });
    const pattern: string[] = [];
    for (let i = 0; i < 40; i++) {
      m.moderator.due();
      if (m.moderator.holding) {
        pattern.push('H');
        m.expire();
      } else {
        pattern.push('.');
      }
    }
    // Waits of 1, 2, 4, 8, 8, ... notifications between probes.
    expect(pattern.join('')).toBe('H.H..H....H........H........H........H..');
    expect(m.moderator.stats.notifications).toBe(40);
  });

  it('keeps holding while polls find requests, then sends one notification', () => {
    const m = setup();
    m.moderator.due();
    m.arrivals.push(3, 2, 0);
    m.expire();
    expect(m.take()).toEqual(['poll 3']);
    m.expire();
    expect(m.take()).toEqual(['poll 2']);
    m.expire();
    expect(m.take()).toEqual(['poll 0', 'resume', 'notify']);
    expect(m.moderator.stats).toEqual({ notifications: 1, held: 1, wasted: 0 });
    // The hold paid off: the next notification is held at once, without a probe's wait.
    m.moderator.due();
    expect(m.moderator.holding).toBe(true);
  });

  it('counts requests that arrive by kicks during a hold', () => {
    const m = setup();
    m.moderator.due();
    m.advance(40);
    m.moderator.arrived(2);
    m.expire();
    expect(m.take()).toEqual(['poll 0']); // a kick came since the timer started: keep going
    m.advance(40);
    m.moderator.arrived(1); // and another: the driver keeps submitting
    m.expire();
    expect(m.take()).toEqual(['poll 0']);
    m.expire();
    expect(m.take()).toEqual(['poll 0', 'resume', 'notify']);
    expect(m.moderator.stats.wasted).toBe(0);
    m.moderator.due();
    expect(m.moderator.holding).toBe(true);
  });

  it('does not pay for one burst: the rest of a large I/O split into requests', () => {
    const m = setup();
    m.moderator.due(); // the first piece completed
    m.advance(40);
    m.moderator.arrived(2); // the other pieces, in one kick
    m.expire();
    expect(m.take()).toEqual(['poll 0']);
    m.expire(); // then nothing: the driver waits for the whole I/O
    expect(m.take()).toEqual(['poll 0', 'resume', 'notify']);
    expect(m.moderator.stats).toEqual({ notifications: 1, held: 1, wasted: 1 });
    m.moderator.due(); // the next large I/O is not held
    expect(m.moderator.holding).toBe(false);
    expect(m.take()).toEqual(['notify']);
    // The same burst found by a poll instead of a kick.
    const p = setup();
    p.moderator.due();
    p.arrivals.push(2, 0);
    p.expire();
    p.expire();
    expect(p.moderator.stats.wasted).toBe(1);
  });

  it('never holds longer than maxMicros', () => {
    const m = setup({ maxMicros: 500, minGapMicros: 100, maxGapMicros: 100 });
    m.moderator.due();
    m.arrivals.push(...Array.from({ length: 20 }, () => 1));
    let waited = 0;
    while (m.moderator.holding) waited += m.expire();
    expect(waited).toBe(500);
    expect(m.take().slice(-2)).toEqual(['resume', 'notify']);
  });

  it('follows the driver: a short gap for a fast driver, a long one for a slow one', () => {
    const fast = setup();
    fast.moderator.due();
    // 10 requests per 100 µs poll: one every 10 µs, so the gap shrinks toward 4 × 10 µs.
    for (let i = 0; i < 30; i++) {
      fast.arrivals.push(10, 10);
      fast.expire();
      fast.expire();
      fast.moderator.flush();
      fast.moderator.due();
    }
    expect(fast.moderator.gapMicros).toBeGreaterThanOrEqual(20);
    expect(fast.moderator.gapMicros).toBeLessThan(45);
    const slow = setup();
    slow.moderator.due();
    // One request every 300 µs: the gap grows to the 400 µs ceiling.
    for (let i = 0; i < 30; i++) {
      slow.advance(300);
      slow.moderator.arrived(1);
      slow.advance(300);
      slow.moderator.arrived(1);
      slow.moderator.flush();
      slow.moderator.due();
    }
    expect(slow.moderator.gapMicros).toBe(400);
  });

  it('flush sends a held notification at once; close also releases the timer', () => {
    const m = setup();
    m.moderator.flush(); // nothing held: nothing sent
    expect(m.take()).toEqual([]);
    m.moderator.due();
    m.moderator.flush();
    expect(m.take()).toEqual(['resume', 'notify']);
    expect(m.timer.delay).toBeUndefined();
    m.moderator.due(); // after a wasted hold: at once
    expect(m.take()).toEqual(['notify']);
    m.moderator.due(); // the next probe
    expect(m.moderator.holding).toBe(true);
    m.moderator.close();
    expect(m.timer.closed).toBe(true);
    expect(m.take()).toEqual(['resume', 'notify']); // close flushed the held one
    m.moderator.due(); // closed: no more holding
    expect(m.moderator.holding).toBe(false);
    expect(m.take()).toEqual(['notify']);
    expect(m.moderator.stats.notifications).toBe(4);
  });

  it('a due notification while one is held adds nothing', () => {
    const m = setup();
    m.moderator.due();
    m.moderator.due();
    m.moderator.due();
    m.expire();
    expect(m.take().filter((e) => e === 'notify')).toHaveLength(1);
  });
});
