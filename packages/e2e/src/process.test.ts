import { describe, expect, it } from 'vitest';
import { ManagedProcess, runCommand } from './process.js';

describe('ManagedProcess', () => {
  it('waits for markers in order and reports the end', async () => {
    const proc = ManagedProcess.start({
      label: 'sh',
      command: 'sh',
      args: ['-c', 'echo one; echo two >&2; read line; echo "got $line"'],
    });
    const one = await proc.waitFor('one', { timeoutMs: 5000 });
    await proc.waitFor(/tw(o)/, { timeoutMs: 5000, from: one.end });
    proc.write('ping\n');
    const got = await proc.waitFor(/got (\w+)/, { timeoutMs: 5000 });
    expect(got.groups[0]).toBe('ping');
    expect((await proc.exited).code).toBe(0);
  });

  it('rejects a wait when the process ends first, with its output', async () => {
    const proc = ManagedProcess.start({
      label: 'quitter',
      command: 'sh',
      args: ['-c', 'echo bye'],
    });
    await expect(proc.waitFor('never', { timeoutMs: 5000 })).rejects.toThrow(
      /quitter exited.*\n.*bye/s,
    );
  });

  it('times out a wait, and stop() ends the process', async () => {
    const proc = ManagedProcess.start({ label: 'sleeper', command: 'sleep', args: ['30'] });
    await expect(proc.waitFor('x', { timeoutMs: 50 })).rejects.toMatchObject({ code: 'TIMEOUT' });
    const status = await proc.stop({ graceMs: 1000 });
    expect(status.signal).toBe('SIGTERM');
    expect(proc.running).toBe(false);
  });

  it('reports a program that does not exist as exit 127', async () => {
    const proc = ManagedProcess.start({
      label: 'nothing',
      command: '/nonexistent/program',
      args: [],
    });
    expect((await proc.exited).code).toBe(127);
  });

  it('runCommand returns stdout and throws with stderr on failure', async () => {
    expect(await runCommand('sh', ['-c', 'echo out'])).toBe('out\n');
    await expect(runCommand('sh', ['-c', 'echo oops >&2; exit 3'])).rejects.toThrow(
      /exit 3.*oops/s,
    );
  });
});
