/**
 * The demo job (`pnpm start`, or `node packages/e2e/dist/main.js [--shell]`): prepares the
 * guest, serves a small ext4 disk and a network interface with our vhost-user backends
 * (`virtkit vhost-user --device blk,...` and `--device net,tap=...` in a network namespace made
 * for the run), boots QEMU with them, and lets the guest mount the disk, write and read a file,
 * and ping the host through our NIC. `--shell` opens an interactive shell in the guest instead.
 * Everything it made (processes, the namespace, temporary files) is removed on exit or Ctrl-C.
 */

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { attachBlk, attachNet } from './attach.js';
import { exitOnSignals, onCleanup, runCleanups } from './cleanup.js';
import { createExt4Image } from './disk.js';
import { prepareX86Guest, scriptInitramfs } from './guest.js';
import { NetworkNamespace } from './netns.js';
import { startGuestVm } from './qemu.js';
import { NET_LAYOUT } from './scenarios/net.js';
import { netnsSkipReason, onPath, virtkitSkipReason } from './skip.js';

const say = (message: string): void => console.log(`virtkit ▸ ${message}`);

/** What the guest does in the demo. Each step says what it is about to do, then does it. */
function demoScript(): string {
  const L = NET_LAYOUT;
  return `step() { echo; echo "guest ▸ $*"; }
fail=0
step "our disk is $(cat /sys/block/vda/size) sectors at /dev/vda; mounting it (ext4) on /mnt"
mkdir -p /mnt && mount -t ext4 /dev/vda /mnt || fail=1
ls -l /mnt
step "the host left a file there:"
cat /mnt/hello.txt || fail=1
step "writing /mnt/from-guest.txt and syncing it to our vhost-user-blk backend"
echo "hello from the guest, kernel $(uname -r), up $(cut -d' ' -f1 /proc/uptime) s" > /mnt/from-guest.txt && sync || fail=1
step "reading it back without the page cache (drop_caches):"
echo 3 > /proc/sys/vm/drop_caches
cat /mnt/from-guest.txt || fail=1
umount /mnt
step "eth0 ($(cat /sys/class/net/eth0/address)) is our vhost-user net; address ${L.guestAddress}/${L.prefix}, pinging the host at ${L.hostAddress}"
ip addr add ${L.guestAddress}/${L.prefix} dev eth0
ip link set eth0 up
ping -c 3 -W 5 ${L.hostAddress} || fail=1
step "done ($([ $fail = 0 ] && echo all good || echo something failed))"
exit $fail
`;
}

async function main(): Promise<number> {
  exitOnSignals((signal) => say(`${signal}: stopping QEMU and the backends, cleaning up`));
  let shell = false;
  try {
    const { values } = parseArgs({
      args: process.argv.slice(2).filter((arg) => arg !== '--'),
      options: { shell: { type: 'boolean', default: false }, help: { type: 'boolean' } },
    });
    if (values.help) {
      console.log('usage: virtkit-demo [--shell]\n  --shell  an interactive shell in the guest');
      return 0;
    }
    shell = values.shell;
  } catch (error) {
    console.error(`virtkit demo: ${(error as Error).message}`);
    return 2;
  }
  const missing =
    (onPath('qemu-system-x86_64')
      ? undefined
      : 'qemu-system-x86_64 (apt-get install qemu-system-x86)') ??
    (onPath('mkfs.ext4') ? undefined : 'mkfs.ext4 (apt-get install e2fsprogs)') ??
    netnsSkipReason() ??
    virtkitSkipReason();
  if (missing !== undefined) {
    console.error(`virtkit demo: cannot run: ${missing}`);
    return 1;
  }

  say('preparing the guest (Debian kernel, virtio modules, busybox)');
  const guest = await prepareX86Guest(({ step, detail }) => say(`  ${step}: ${detail}`));
  const initrd = await scriptInitramfs(demoScript());

  const work = mkdtempSync(join(tmpdir(), 'virtkit-demo-'));
  onCleanup('remove the demo directory', () => rmSync(work, { recursive: true, force: true }));
  const content = join(work, 'content');
  mkdirSync(content);
  writeFileSync(join(content, 'hello.txt'), 'hello from the host, who made this ext4 image\n');
  const image = join(work, 'disk.img');
  await createExt4Image(image, { sizeMiB: 32, fromDirectory: content, label: 'virtkit' });
  say(`made a 32 MiB ext4 image with hello.txt: ${image}`);

  const netns = await NetworkNamespace.create();
  const L = NET_LAYOUT;
  const tap = await netns.addTap({ address: `${L.hostAddress}/${L.prefix}` });
  say(`made network namespace ${netns.name} with TAP ${tap} at ${L.hostAddress}/${L.prefix}`);

  const backendOutput = (name: string) => (text: string) => {
    for (const line of text.split('\n')) if (line.trim()) say(`[${name} backend] ${line}`);
  };
  const disk = await attachBlk('virtkit', {
    image,
    socketDir: work,
    onOutput: backendOutput('blk'),
  });
  say(
    `serving the disk: virtkit vhost-user --socket ${socketOf(disk.attachment)} --device blk,path=${image}`,
  );
  const nic = await attachNet('virtkit', {
    netns: netns.name,
    tap,
    socketDir: work,
    onOutput: backendOutput('net'),
  });
  say(
    `serving the NIC: ip netns exec ${netns.name} virtkit vhost-user --socket ${socketOf(nic.attachment)} --device net,tap=${tap}`,
  );

  say(
    shell
      ? 'booting QEMU (TCG) with both; a shell follows. Try: mount /dev/vda /mnt; ' +
          `ip addr add ${L.guestAddress}/24 dev eth0; ip link set eth0 up; ping ${L.hostAddress}. ` +
          'Leave with exit (or Ctrl-A x).'
      : 'booting QEMU (TCG) with both: vhost-user-blk-pci and virtio-net-pci on -netdev vhost-user',
  );
  const started = Date.now();
  const vm = startGuestVm({
    kernel: guest.kernel,
    initrd,
    mode: shell ? 'shell' : 'script',
    append: 'quiet',
    blk: [disk.attachment],
    net: [nic.attachment],
    ...(shell ? { stdin: 'inherit' as const } : { onOutput: consoleFilter() }),
  });
  if (shell) {
    vm.child.stdout?.pipe(process.stdout);
    vm.child.stderr?.pipe(process.stderr);
  }
  const status = await vm.exited;
  const guestOk = /VIRTKIT-EXIT 0\r?$/m.test(vm.output);
  say(
    `QEMU exited (${status.signal ?? `code ${status.code}`}) after ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );

  await disk.close();
  await nic.close();
  if (!shell) {
    try {
      const fromGuest = execFileSync('debugfs', ['-R', 'cat /from-guest.txt', image], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trim();
      say(`the host reads the guest's file from the image: ${fromGuest || '(missing)'}`);
      if (!fromGuest) return 1;
    } catch {
      say('debugfs (e2fsprogs) could not read the image');
    }
  }
  say('cleaning up (backends, namespace, temporary files)');
  return shell || guestOk ? 0 : 1;
}

/**
 * Console output for the demo, by line: the firmware's screen (before the kernel's first line)
 * and the module loading list are left out.
 */
function consoleFilter(): (text: string) => void {
  let pending = '';
  let started = false;
  return (text) => {
    pending += text;
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const raw of lines) {
      const line = raw.replace(/\r$/, '');
      if (/^qemu-system/.test(line)) {
        process.stdout.write(`${line}\n`);
        continue;
      }
      if (/^virtkit: linux /.test(line)) started = true;
      if (!started || line === 'VIRTKIT-GUEST-READY' || /^VIRTKIT-EXIT /.test(line)) continue;
      process.stdout.write(`${line}\n`);
    }
  };
}

function socketOf(attachment: { kind: string; socket?: string }): string {
  return attachment.socket ?? '';
}

main().then(
  (code) => {
    runCleanups();
    process.exit(code);
  },
  (error: unknown) => {
    console.error(`virtkit demo failed: ${(error as Error).message}`);
    runCleanups();
    process.exit(1);
  },
);
