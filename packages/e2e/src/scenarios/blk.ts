/**
 * The block scenario: an image with known data at known offsets; a guest script that verifies
 * it, writes (through the page cache + fsync, and with O_DIRECT), records what it wrote in a
 * state block, reboots the machine, and verifies its writes again after the device was reset;
 * then the host checks the image. Also the read-only variant.
 *
 * Every check becomes an `E2E ...` line on the console, and {@link checkBlkRun} turns the output
 * and the image into a list of problems (empty when the run passed), so a failing test says
 * which check failed.
 */

import { createRawImage, type DiskRegion, md5, patternBytes, readRange, sha256 } from '../disk.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const BLOCK = 4 * KiB;

/** Where things are on the scenario's disk. Offsets and lengths are multiples of 4 KiB. */
export const BLK_LAYOUT = {
  size: 64 * MiB,
  regions: [
    {
      name: 'head',
      offset: 0,
      data: Buffer.concat([Buffer.from('VIRTKIT-E2E-DISK\n'), patternBytes(1, BLOCK - 17)]),
    },
    // Not aligned to anything larger than a page, and longer than one request of the guest.
    { name: 'middle', offset: 5 * MiB + 12 * KiB, data: patternBytes(2, 260 * KiB) },
    { name: 'tail', offset: 64 * MiB - 64 * KiB, data: patternBytes(3, 64 * KiB) },
  ] satisfies DiskRegion[],
  /** One block where the first boot records what it wrote, read back after the reboot. */
  stateOffset: 32 * MiB,
  /** Written through the page cache, then fsync (a FLUSH request). */
  bufferedOffset: 40 * MiB,
  /** Written with O_DIRECT. */
  directOffset: 48 * MiB,
  writeBytes: 1 * MiB,
} as const;

/** Writes the scenario's image (sparse, 64 MiB) to `path`. */
export function createBlkImage(path: string): void {
  createRawImage(path, BLK_LAYOUT.size, BLK_LAYOUT.regions);
}

/** Options of {@link blkScript}. */
export interface BlkScriptOptions {
  /**
   * Queues the device has: with more than one, the guest (given as many vCPUs) reads from each
   * CPU so that every queue carries requests, and reports per-queue interrupt counts.
   */
  readonly queues?: number;
}

/** Shell helpers shared by the block scripts. */
function helpers(): string {
  return `dev=/dev/vda
fail=0
check() { # name offset-blocks count-blocks expected-md5
  got=$(dd if=$dev bs=4096 skip=$2 count=$3 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
  if [ "$got" = "$4" ]; then echo "E2E verify-$1 ok"; else echo "E2E verify-$1 BAD got $got want $4"; fail=1; fi
}
check_known() {
${BLK_LAYOUT.regions
  .map(
    (region) =>
      `  check ${region.name} ${region.offset / BLOCK} ${region.data.length / BLOCK} ${md5(region.data)}`,
  )
  .join('\n')}
}
vdev=$(basename "$(readlink /sys/block/vda/device)")
echo "E2E device $vdev features $(cat /sys/block/vda/device/features) size $(cat /sys/block/vda/size) ro $(cat /sys/block/vda/ro) mq $(ls /sys/block/vda/mq | wc -l)"
`;
}

/**
 * The guest script: two phases, told apart by the state block. Phase 1 verifies the known data,
 * writes 1 MiB twice (buffered + fsync, and O_DIRECT), reads both back, records the md5 in the
 * state block and reboots with `reboot -f`; phase 2 verifies the known data and both writes, and
 * exits (the machine then powers off with `virtkit.exit=poweroff`).
 */
export function blkScript(options: BlkScriptOptions = {}): string {
  const queues = options.queues ?? 1;
  const L = BLK_LAYOUT;
  const writeBlocks = L.writeBytes / BLOCK;
  // With several queues, blk-mq maps each CPU to its own hardware queue: pin reads to each CPU.
  const perQueue =
    queues > 1
      ? `for cpu in ${Array.from({ length: queues }, (_, i) => i).join(' ')}; do
  mask=$((1 << cpu))
  taskset $mask dd if=$dev of=/dev/null bs=4096 count=512 skip=$((cpu * 512)) iflag=direct 2>/dev/null || fail=1
done
`
      : '';
  return `${helpers()}
state=$(dd if=$dev bs=4096 skip=${L.stateOffset / BLOCK} count=1 iflag=direct 2>/dev/null | tr -d '\\000' | head -n 1)
case "$state" in
  E2E-STATE1*) phase=2 ;;
  *) phase=1 ;;
esac
echo "E2E phase $phase"
check_known
${perQueue}if [ $phase = 1 ]; then
  dd if=/dev/urandom of=/tmp/w bs=65536 count=${L.writeBytes / 65536} 2>/dev/null
  sum=$(md5sum /tmp/w | cut -d' ' -f1)
  dd if=/tmp/w of=$dev bs=65536 seek=${L.bufferedOffset / 65536} conv=notrunc,fsync 2>/dev/null || { echo "E2E buffered-write failed"; fail=1; }
  dd if=/tmp/w of=$dev bs=65536 seek=${L.directOffset / 65536} oflag=direct conv=notrunc 2>/dev/null || { echo "E2E direct-write failed"; fail=1; }
  check buffered ${L.bufferedOffset / BLOCK} ${writeBlocks} $sum
  check direct ${L.directOffset / BLOCK} ${writeBlocks} $sum
  printf 'E2E-STATE1 %s\\n' "$sum" | dd of=$dev bs=4096 seek=${L.stateOffset / BLOCK} conv=sync,notrunc,fsync 2>/dev/null || fail=1
  sync
  echo "E2E wrote $sum"
  [ $fail = 0 ] || exit $fail
  echo "E2E rebooting"
  reboot -f
  sleep 60
  exit 99
fi
sum=\${state#E2E-STATE1 }
check buffered ${L.bufferedOffset / BLOCK} ${writeBlocks} "$sum"
check direct ${L.directOffset / BLOCK} ${writeBlocks} "$sum"
grep "$vdev-" /proc/interrupts | awk '{ n = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i; printf "%s=%d ", $NF, n } END { print "" }' | sed 's/^/E2E irqs /'
echo "E2E done $fail"
exit $fail
`;
}

/** The guest script for a read-only disk: known data reads back, writes are refused. */
export function readOnlyScript(): string {
  const L = BLK_LAYOUT;
  return `${helpers()}
check_known
if out=$(dd if=/dev/zero of=$dev bs=4096 count=1 seek=${L.directOffset / BLOCK} oflag=direct conv=notrunc 2>&1); then
  echo "E2E direct-write accepted"; fail=1
else
  echo "E2E direct-write refused $(echo "$out" | head -n 1)"
fi
if out=$(dd if=/dev/zero of=$dev bs=4096 count=1 seek=${L.bufferedOffset / BLOCK} conv=notrunc,fsync 2>&1); then
  echo "E2E buffered-write accepted"; fail=1
else
  echo "E2E buffered-write refused $(echo "$out" | head -n 1)"
fi
sync
check_known
echo "E2E done $fail"
exit $fail
`;
}

/** Problems found in the guest's output and the image after a run of {@link blkScript}. */
export function checkBlkRun(
  output: string,
  image: string,
  options: { readonly queues?: number; readonly packed?: boolean } = {},
): string[] {
  const problems: string[] = [];
  const text = output.replaceAll('\r', '');
  for (const bad of text.matchAll(/^E2E (verify-\S+ BAD.*|\S+-write failed)$/gm)) {
    problems.push(`guest: ${bad[1]}`);
  }
  // Every check ran in both phases: known data 2×, each write verified after writing and after reboot.
  for (const region of BLK_LAYOUT.regions) {
    const count = text.match(new RegExp(`^E2E verify-${region.name} ok$`, 'gm'))?.length ?? 0;
    if (count !== 2) problems.push(`guest verified region ${region.name} ${count} times, not 2`);
  }
  for (const name of ['buffered', 'direct']) {
    const count = text.match(new RegExp(`^E2E verify-${name} ok$`, 'gm'))?.length ?? 0;
    if (count !== 2) problems.push(`guest verified its ${name} write ${count} times, not 2`);
  }
  if (!/^E2E phase 1$/m.test(text)) problems.push('no phase 1');
  if (!/^E2E rebooting$/m.test(text)) problems.push('phase 1 did not reboot');
  if (!/^E2E phase 2$/m.test(text)) problems.push('no phase 2 after the reboot');
  if (!/^E2E done 0$/m.test(text)) problems.push('phase 2 did not finish cleanly');
  for (const line of text.matchAll(/^.*(I\/O error|blk_update_request|Buffer I\/O).*$/gm)) {
    problems.push(`kernel: ${line[0].trim()}`);
  }
  const features = /^E2E device \S+ features ([01]+) .* mq (\d+)$/m.exec(text);
  if (!features) problems.push('no device report');
  else {
    if (options.packed !== undefined && (features[1]![34] === '1') !== options.packed) {
      problems.push(`VIRTIO_F_RING_PACKED negotiated: ${features[1]![34] === '1'}`);
    }
    if (options.queues !== undefined && Number(features[2]) !== options.queues) {
      problems.push(`guest uses ${features[2]} hardware queues, not ${options.queues}`);
    }
  }
  if ((options.queues ?? 1) > 1) {
    const irqs = /^E2E irqs (.*)$/m.exec(text)?.[1] ?? '';
    for (let queue = 0; queue < (options.queues ?? 1); queue++) {
      const count = Number(new RegExp(`req\\.${queue}=(\\d+)`).exec(irqs)?.[1] ?? 0);
      if (count === 0) problems.push(`queue ${queue} signalled no interrupts (${irqs.trim()})`);
    }
  }
  // The host's view of the image.
  const wrote = /^E2E wrote ([0-9a-f]{32})$/m.exec(text)?.[1];
  if (!wrote) problems.push('guest did not report what it wrote');
  else {
    const L = BLK_LAYOUT;
    for (const [name, offset] of [
      ['buffered', L.bufferedOffset],
      ['direct', L.directOffset],
    ] as const) {
      const got = md5(readRange(image, offset, L.writeBytes));
      if (got !== wrote) problems.push(`image: ${name} write has md5 ${got}, guest wrote ${wrote}`);
    }
    const state = readRange(image, L.stateOffset, 64).toString('latin1');
    if (!state.startsWith(`E2E-STATE1 ${wrote}\n`)) {
      problems.push(`image: state block holds ${JSON.stringify(state)}`);
    }
  }
  for (const region of BLK_LAYOUT.regions) {
    if (!readRange(image, region.offset, region.data.length).equals(region.data)) {
      problems.push(`image: region ${region.name} changed`);
    }
  }
  return problems;
}

/** Problems found after a run of {@link readOnlyScript}; `imageDigestBefore` from {@link imageDigest}. */
export function checkReadOnlyRun(
  output: string,
  image: string,
  imageDigestBefore: string,
): string[] {
  const problems: string[] = [];
  const text = output.replaceAll('\r', '');
  for (const bad of text.matchAll(/^E2E (verify-\S+ BAD.*|\S+-write accepted)$/gm)) {
    problems.push(`guest: ${bad[1]}`);
  }
  if (!/^E2E device \S+ features [01]+ size \d+ ro 1 /m.test(text)) {
    problems.push('the guest does not see the disk as read-only');
  }
  for (const kind of ['direct', 'buffered']) {
    const refused = new RegExp(`^E2E ${kind}-write refused (.*)$`, 'm').exec(text)?.[1];
    if (refused === undefined) problems.push(`no ${kind} write refusal reported`);
    else if (
      !/Read-only file system|Operation not permitted|I\/O error|Permission denied/.test(refused)
    ) {
      problems.push(`${kind} write refused with an unexpected error: ${refused}`);
    }
  }
  if (!/^E2E done 0$/m.test(text)) problems.push('the script did not finish cleanly');
  const after = imageDigest(image);
  if (after !== imageDigestBefore) problems.push('image changed');
  return problems;
}

/** sha256 of a whole (small) image. */
export function imageDigest(image: string): string {
  return sha256(readRange(image, 0, BLK_LAYOUT.size));
}
