/**
 * Boots the prepared guests under QEMU software emulation and checks, from inside the guest, that
 * the virtio modules load and the devices work: /dev/vda reads and writes, eth0 gets a DHCP lease
 * from QEMU's user-mode network. Slow (a first run downloads ~30 MB from Debian; each boot takes
 * a few seconds of TCG), so it skips when VIRTKIT_SKIP_SLOW=1 or QEMU is missing.
 *
 * riscv64 runs when qemu-system-riscv64 is installed and either its guest is already in the cache
 * or VIRTKIT_GUEST_RISCV64=1 allows the ~115 MB download.
 */

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildInitramfs,
  type GuestArch,
  type PreparedGuest,
  parseGuestExit,
  prepareGuest,
  qemuCommand,
  readPreparedGuest,
} from '../src/index.js';
import { findTool } from '../src/tools.js';

const BOOT_TIMEOUT_MS = 120_000;
const PREPARE_TIMEOUT_MS = 600_000;
const DISK_BYTES = 8 << 20;
const DISK_SIGNATURE = 'virtkit-disk-signature';
const GUEST_WRITES = 'virtkit-guest-wrote-this';
const WRITE_OFFSET = 1 << 20;

/** Checks run inside the guest; each prints a line the test asserts on, and the exit status sums failures. */
function guestScript(modules: readonly string[]): string {
  return `fail=0
for m in ${modules.join(' ')}; do
  if grep -q "^$m " /proc/modules; then echo "module-ok $m"; else echo "module-missing $m"; fail=1; fi
done
if [ -b /dev/vda ]; then echo "vda-ok $(cat /sys/block/vda/size)"; else echo "vda-missing"; fail=1; fi
echo "vda-head $(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c ${DISK_SIGNATURE.length})"
printf '${GUEST_WRITES}' | dd of=/dev/vda bs=512 seek=${WRITE_OFFSET / 512} conv=sync,notrunc 2>/dev/null || fail=1
sync
if ip link show eth0 >/dev/null 2>&1; then echo "eth0-ok $(cat /sys/class/net/eth0/address)"; else echo "eth0-missing"; fail=1; fi
ip link set eth0 up
udhcpc -i eth0 -n -q -t 5 -T 2 -s /bin/true 2>&1 | grep -o 'lease of [0-9.]* obtained' || fail=1
exit $fail
`;
}

interface BootResult {
  readonly status: number | null;
  readonly output: string;
  readonly wallMs: number;
}

function boot(command: string, args: readonly string[]): Promise<BootResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      output += chunk.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), BOOT_TIMEOUT_MS - 5_000);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, output, wallMs: Date.now() - started });
    });
  });
}

function skipReason(arch: GuestArch): string | undefined {
  if (process.env.VIRTKIT_SKIP_SLOW === '1') return 'VIRTKIT_SKIP_SLOW=1';
  const qemu = arch === 'x86_64' ? 'qemu-system-x86_64' : 'qemu-system-riscv64';
  if (findTool(qemu) === undefined)
    return `${qemu} is not installed (apt-get install qemu-system-x86 qemu-system-misc)`;
  return undefined;
}

async function hasCache(arch: GuestArch): Promise<boolean> {
  return readPreparedGuest({ arch }).then(
    () => true,
    () => false,
  );
}

async function downloadBlocked(arch: GuestArch): Promise<string | undefined> {
  if (await hasCache(arch)) return undefined;
  const missing = ['apt-get', 'apt-cache', 'dpkg-deb'].filter(
    (tool) => findTool(tool) === undefined,
  );
  return missing.length > 0
    ? `no cached ${arch} guest and ${missing.join(', ')} not on PATH to fetch one`
    : undefined;
}

const x86Skip = skipReason('x86_64') ?? (await downloadBlocked('x86_64'));
if (x86Skip) console.warn(`[guest e2e] skipping x86_64 boot: ${x86Skip}`);

describe.skipIf(x86Skip !== undefined)(
  'x86_64 guest under qemu-system-x86_64 (TCG, q35, virtio-pci)',
  () => {
    let guest: PreparedGuest;
    let work: string;
    let scriptInitramfs: string;

    beforeAll(async () => {
      guest = await prepareGuest({
        arch: 'x86_64',
        onProgress: ({ step, detail }) => console.info(`[guest e2e] ${step}: ${detail}`),
      });
      work = mkdtempSync(join(tmpdir(), 'virtkit-guest-e2e-'));
      scriptInitramfs = (
        await buildInitramfs({
          arch: 'x86_64',
          mode: 'script',
          script: guestScript(guest.modules.map((module) => module.name)),
        })
      ).path;
    }, PREPARE_TIMEOUT_MS);

    afterAll(() => {
      if (work) rmSync(work, { recursive: true, force: true });
    });

    it(
      'loads the virtio modules, reads and writes /dev/vda and gets a DHCP lease on eth0',
      async () => {
        const disk = join(work, 'disk.img');
        const image = Buffer.alloc(DISK_BYTES);
        image.write(DISK_SIGNATURE, 0);
        writeFileSync(disk, image);
        const qemu = qemuCommand({
          arch: 'x86_64',
          kernel: guest.kernel,
          initrd: scriptInitramfs,
          disk,
          net: true,
          rng: true,
          console: true,
        });
        const { status, output, wallMs } = await boot(qemu.command, qemu.args);
        console.info(`[guest e2e] x86_64 script boot: ${wallMs} ms wall`);

        expect(status, output).toBe(0);
        expect(output).toContain('VIRTKIT-GUEST-READY');
        for (const module of guest.modules)
          expect(output).toContain(`virtkit: loading ${module.name}\r\n`);
        expect(output).not.toContain('virtkit: failed to load');
        for (const module of [
          'virtio_pci',
          'virtio_blk',
          'virtio_net',
          'virtio_console',
          'virtio_rng',
        ]) {
          expect(output).toContain(`module-ok ${module}`);
        }
        expect(output).toContain(`vda-ok ${DISK_BYTES / 512}`);
        expect(output).toContain(`vda-head ${DISK_SIGNATURE}`);
        expect(output).toMatch(/eth0-ok 52:54:00:[0-9a-f:]+/);
        expect(output).toMatch(/lease of 10\.0\.2\.\d+ obtained/);
        expect(parseGuestExit(output), output).toBe(0);
        // The guest's write went through virtio-blk into the host file.
        expect(
          readFileSync(disk)
            .subarray(WRITE_OFFSET, WRITE_OFFSET + GUEST_WRITES.length)
            .toString(),
        ).toBe(GUEST_WRITES);
      },
      BOOT_TIMEOUT_MS,
    );

    it(
      'switches the same initramfs to demo mode from the kernel command line',
      async () => {
        const qemu = qemuCommand({
          arch: 'x86_64',
          kernel: guest.kernel,
          initrd: scriptInitramfs,
          mode: 'demo',
          rng: true,
        });
        const { status, output } = await boot(qemu.command, qemu.args);
        expect(status, output).toBe(0);
        expect(output).toContain('mode demo');
        expect(output).toContain('virtkit demo: virtio devices');
        expect(output).toMatch(/virtio0: rng \(device 0x0004\) driver virtio_rng/);
        expect(output).toMatch(/hwrng: virtio_rng\.0, 16 bytes: [0-9a-f]{32}/);
        expect(output).not.toContain('module-ok');
        expect(parseGuestExit(output)).toBe(0);
      },
      BOOT_TIMEOUT_MS,
    );

    it(
      "reports the script's exit status",
      async () => {
        const { path } = await buildInitramfs({
          arch: 'x86_64',
          mode: 'script',
          script: 'echo failing on purpose\nexit 7\n',
        });
        const qemu = qemuCommand({ arch: 'x86_64', kernel: guest.kernel, initrd: path });
        const { status, output } = await boot(qemu.command, qemu.args);
        expect(status, output).toBe(0);
        expect(output).toContain('failing on purpose');
        expect(parseGuestExit(output), output).toBe(7);
      },
      BOOT_TIMEOUT_MS,
    );
  },
);

const riscvSkip =
  skipReason('riscv64') ??
  (await downloadBlocked('riscv64')) ??
  (process.env.VIRTKIT_GUEST_RISCV64 === '1' || (await hasCache('riscv64'))
    ? undefined
    : 'its guest is not in the cache; set VIRTKIT_GUEST_RISCV64=1 to allow the ~115 MB download');
if (riscvSkip) console.warn(`[guest e2e] skipping riscv64 boot: ${riscvSkip}`);

describe.skipIf(riscvSkip !== undefined)(
  'riscv64 guest under qemu-system-riscv64 (TCG, virt, virtio-mmio)',
  () => {
    let guest: PreparedGuest;

    beforeAll(async () => {
      guest = await prepareGuest({
        arch: 'riscv64',
        onProgress: ({ step, detail }) => console.info(`[guest e2e] ${step}: ${detail}`),
      });
    }, PREPARE_TIMEOUT_MS);

    it(
      'loads its modules and reads and writes /dev/vda over virtio-mmio',
      async () => {
        const work = mkdtempSync(join(tmpdir(), 'virtkit-guest-e2e-rv-'));
        try {
          const disk = join(work, 'disk.img');
          const image = Buffer.alloc(DISK_BYTES);
          image.write(DISK_SIGNATURE, 0);
          writeFileSync(disk, image);
          const { path } = await buildInitramfs({
            arch: 'riscv64',
            mode: 'script',
            script: guestScript(guest.modules.map((module) => module.name)),
          });
          const qemu = qemuCommand({
            arch: 'riscv64',
            kernel: guest.kernel,
            initrd: path,
            disk,
            net: true,
            transport: 'mmio',
          });
          const { status, output, wallMs } = await boot(qemu.command, qemu.args);
          console.info(`[guest e2e] riscv64 script boot: ${wallMs} ms wall`);
          expect(status, output).toBe(0);
          expect(output).toContain('VIRTKIT-GUEST-READY');
          expect(output).toContain('module-ok virtio_mmio');
          expect(output).toContain(`vda-head ${DISK_SIGNATURE}`);
          expect(output).toMatch(/lease of 10\.0\.2\.\d+ obtained/);
          expect(parseGuestExit(output), output).toBe(0);
          expect(
            readFileSync(disk)
              .subarray(WRITE_OFFSET, WRITE_OFFSET + GUEST_WRITES.length)
              .toString(),
          ).toBe(GUEST_WRITES);
        } finally {
          rmSync(work, { recursive: true, force: true });
        }
      },
      BOOT_TIMEOUT_MS,
    );
  },
);
