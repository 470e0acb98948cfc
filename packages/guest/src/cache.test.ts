import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { defaultGuestDir, withCacheLock } from './cache.js';

const temporaryDirs: string[] = [];
function temporaryDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'virtkit-lock-'));
  temporaryDirs.push(dir);
  return dir;
}
afterEach(() => {
  for (const dir of temporaryDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('defaultGuestDir', () => {
  it('uses VIRTKIT_GUEST_CACHE, then XDG_CACHE_HOME, then ~/.cache', () => {
    expect(defaultGuestDir('riscv64', { VIRTKIT_GUEST_CACHE: '/c' })).toBe('/c/riscv64');
    expect(defaultGuestDir('x86_64', { XDG_CACHE_HOME: '/x' })).toBe('/x/virtkit/guest/x86_64');
    expect(defaultGuestDir('x86_64', { VIRTKIT_GUEST_CACHE: '' })).toBe(
      join(homedir(), '.cache', 'virtkit', 'guest', 'x86_64'),
    );
  });
});

describe('withCacheLock', () => {
  it('runs one holder at a time', async () => {
    const dir = temporaryDir();
    let inside = 0;
    let most = 0;
    const task = async (): Promise<void> => {
      inside++;
      most = Math.max(most, inside);
      await sleep(30);
      inside--;
    };
    await Promise.all([
      withCacheLock(dir, task),
      withCacheLock(dir, task),
      withCacheLock(dir, task),
    ]);
    expect(most).toBe(1);
  });

  it('releases the lock when the task throws', async () => {
    const dir = temporaryDir();
    await expect(withCacheLock(dir, () => Promise.reject(new Error('boom')))).rejects.toThrow(
      'boom',
    );
    await expect(withCacheLock(dir, async () => 'again', { timeoutMs: 1000 })).resolves.toBe(
      'again',
    );
  });

  it('takes over a lock left by a dead process', async () => {
    const dir = temporaryDir();
    const dead = spawnSync(process.execPath, [
      '-e',
      'process.stdout.write(String(process.pid))',
    ]).stdout.toString();
    mkdirSync(join(dir, '.lock'));
    writeFileSync(
      join(dir, '.lock', 'owner'),
      JSON.stringify({ pid: Number(dead), host: hostname() }),
    );
    await expect(withCacheLock(dir, async () => 'mine', { timeoutMs: 2000 })).resolves.toBe('mine');
  });

  it('waits for a live holder and gives up with CACHE_LOCKED', async () => {
    const dir = temporaryDir();
    mkdirSync(join(dir, '.lock'));
    writeFileSync(
      join(dir, '.lock', 'owner'),
      JSON.stringify({ pid: process.pid, host: hostname() }),
    );
    const waits: string[] = [];
    await expect(
      withCacheLock(dir, async () => 'never', {
        timeoutMs: 300,
        onWait: (owner) => waits.push(owner),
      }),
    ).rejects.toMatchObject({ code: 'CACHE_LOCKED' });
    expect(waits).toEqual([`process ${process.pid} on ${hostname()}`]);
  });
});
