import { describe, expect, it } from 'vitest';
import { qemuCommand } from './qemu.js';

function after(args: readonly string[], flag: string): string[] {
  return args.flatMap((arg, index) => (arg === flag ? [args[index + 1]!] : []));
}

describe('qemuCommand', () => {
  it('boots x86_64 on q35 under TCG with the serial console and reboot ending QEMU', () => {
    const { command, args, append } = qemuCommand({
      arch: 'x86_64',
      kernel: '/k',
      initrd: '/i',
      mode: 'script',
      disk: '/tmp/a,b.img',
      net: true,
      rng: true,
    });
    expect(command).toBe('qemu-system-x86_64');
    expect(after(args, '-M')).toEqual(['q35']);
    expect(after(args, '-accel')).toEqual(['tcg']);
    expect(args).toContain('-no-reboot');
    expect(args).toContain('-nographic');
    expect(after(args, '-kernel')).toEqual(['/k']);
    expect(after(args, '-initrd')).toEqual(['/i']);
    expect(append).toBe('console=ttyS0 reboot=k panic=-1 virtkit.mode=script');
    expect(after(args, '-append')).toEqual([append]);
    expect(after(args, '-drive')).toEqual(['if=none,id=vd0,format=raw,file=/tmp/a,,b.img']);
    expect(after(args, '-device')).toEqual([
      'virtio-blk-pci,drive=vd0',
      'virtio-net-pci,netdev=net0',
      'virtio-rng-pci',
    ]);
  });

  it('boots riscv64 on virt with OpenSBI and can use virtio-mmio', () => {
    const { command, args, append } = qemuCommand({
      arch: 'riscv64',
      kernel: '/Image',
      initrd: '/i',
      transport: 'mmio',
      console: true,
      append: 'quiet',
    });
    expect(command).toBe('qemu-system-riscv64');
    expect(after(args, '-M')).toEqual(['virt']);
    expect(after(args, '-bios')).toEqual(['default']);
    expect(append).toBe('console=ttyS0 panic=-1 quiet');
    expect(after(args, '-device')).toEqual(['virtio-serial-device', 'virtconsole,chardev=vcon0']);
  });

  it('refuses virtio-mmio on x86_64 q35', () => {
    expect(() =>
      qemuCommand({ arch: 'x86_64', kernel: 'k', initrd: 'i', transport: 'mmio' }),
    ).toThrow(expect.objectContaining({ code: 'INVALID_OPTIONS' }));
  });
});
