import { rmSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { runGuestCommand } from './cli.js';
import { makeFakeGuestCache } from './test-fixtures.js';

function capture(): {
  out: string[];
  err: string[];
  io: { out: (l: string) => void; err: (l: string) => void };
} {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { out: (line) => out.push(line), err: (line) => err.push(line) } };
}

const temporaryDirs: string[] = [];
afterEach(() => {
  for (const dir of temporaryDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('runGuestCommand', () => {
  it.each([
    [['prepare', '--arch', 'sparc'], /unknown --arch 'sparc'/],
    [['guest', 'prepare', '--bogus'], /Unknown option '--bogus'/],
    [['prepare', 'extra'], /positional argument/],
    [['prepare', '--mode', 'script'], /--mode must be shell or demo/],
    [['frobnicate'], /unknown command 'frobnicate'/],
    [[], /usage: virtkit guest prepare/],
  ])('exits 2 for bad arguments %j', async (argv, message) => {
    const { err, io } = capture();
    expect(await runGuestCommand(argv, io)).toBe(2);
    expect(err.join('\n')).toMatch(message);
  });

  it('prints usage for --help', async () => {
    const { out, io } = capture();
    expect(await runGuestCommand(['guest', '--help'], io)).toBe(0);
    expect(out.join('\n')).toContain('--arch x86_64|riscv64');
  });

  it('prints the kernel and initramfs paths of a prepared guest', async () => {
    const dir = makeFakeGuestCache('x86_64');
    temporaryDirs.push(dir);
    const { out, err, io } = capture();
    expect(await runGuestCommand(['guest', 'prepare', '--dir', dir, '--mode', 'demo'], io)).toBe(0);
    expect(out).toEqual([
      `kernel     ${dir}/kernel/vmlinuz-6.1.0-99-cloud-amd64`,
      `initramfs  ${dir}/initramfs-demo.cpio.gz`,
    ]);
    expect(err[0]).toMatch(/^\[ready\] /);
    expect(err.at(-1)).toMatch(
      /^boot it: {3}qemu-system-x86_64 -M q35 .* -append 'console=ttyS0 reboot=k panic=-1'$/,
    );
  });
});
