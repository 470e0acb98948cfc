import { describe, expect, it } from 'vitest';
import { guestVmCommand } from './qemu.js';

const base = { kernel: '/k/vmlinuz', initrd: '/k/initrd' };

describe('guestVmCommand', () => {
  it('boots with QEMU devices and no shared memory when no device is vhost-user', () => {
    const { command, args } = guestVmCommand({
      ...base,
      blk: [{ kind: 'builtin', image: '/d/a,b.img', cache: 'none', readonly: true }],
    });
    expect(command).toBe('qemu-system-x86_64');
    expect(args).toContain('-no-reboot');
    expect(args.join(' ')).not.toContain('memory-backend-memfd');
    expect(args).toContain('if=none,id=disk0,format=raw,file=/d/a,,b.img,cache=none,readonly=on');
  });

  it('shares guest RAM through a memfd for vhost-user devices, sized like the guest', () => {
    const { args } = guestVmCommand({
      ...base,
      memoryMiB: 256,
      blk: [
        { kind: 'vhost-user', socket: '/s/blk.sock', numQueues: 2, packed: true, reconnect: 1 },
      ],
    });
    expect(args).toContain('memory-backend-memfd,id=mem,size=256M,share=on');
    expect(args).toContain('memory-backend=mem');
    expect(args).toContain('socket,id=blkchr0,path=/s/blk.sock,reconnect=1');
    expect(args).toContain('vhost-user-blk-pci,chardev=blkchr0,num-queues=2,packed=on');
  });

  it('gives vhost-user NICs no MSI-X unless asked, and keeps it for QEMU TAP NICs', () => {
    const { args } = guestVmCommand({
      ...base,
      net: [
        { kind: 'vhost-user', socket: '/s/net.sock' },
        { kind: 'tap', ifname: 'vk0' },
        { kind: 'vhost-user', socket: '/s/net2.sock', msix: true, queues: 2 },
      ],
    });
    const devices = args.filter((arg) => arg.startsWith('virtio-net-pci'));
    expect(devices[0]).toMatch(/,vectors=0$/);
    expect(devices[1]).not.toContain('vectors');
    expect(devices[2]).toMatch(/,mq=on,vectors=6$/);
    expect(args).toContain('tap,id=net1,ifname=vk0,script=no,downscript=no,vhost=off');
  });

  it('lets a guest reboot restart the machine when asked', () => {
    expect(guestVmCommand({ ...base, reboot: true }).args).not.toContain('-no-reboot');
  });
});
