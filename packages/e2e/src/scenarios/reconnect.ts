/**
 * The reconnect scenario: the guest writes and verifies data, then sits idle at a prompt while
 * the host restarts the vhost-user backend; when the host types `go` on the serial console the
 * guest reads its earlier data back (bypassing its page cache), writes more and verifies it.
 */

import { md5, readRange } from '../disk.js';

const MiB = 1 << 20;

/** Where the scenario writes, on an image of `size` zero bytes. */
export const RECONNECT_LAYOUT = {
  size: 32 * MiB,
  beforeOffset: 4 * MiB,
  afterOffset: 12 * MiB,
  writeBytes: 1 * MiB,
} as const;

/** The line the guest prints when it is idle and waiting for `go`. */
export const IDLE_MARKER = 'E2E idle';

/** The guest script. */
export function reconnectScript(): string {
  const L = RECONNECT_LAYOUT;
  const blocks = L.writeBytes / 65536;
  return `dev=/dev/vda
fail=0
check() { # name offset-64k-blocks expected-md5
  got=$(dd if=$dev bs=65536 skip=$2 count=${blocks} iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
  if [ "$got" = "$3" ]; then echo "E2E verify-$1 ok"; else echo "E2E verify-$1 BAD got $got want $3"; fail=1; fi
}
dd if=/dev/urandom of=/tmp/a bs=65536 count=${blocks} 2>/dev/null
a=$(md5sum /tmp/a | cut -d' ' -f1)
dd if=/tmp/a of=$dev bs=65536 seek=${L.beforeOffset / 65536} oflag=direct conv=notrunc,fsync 2>/dev/null || fail=1
check before ${L.beforeOffset / 65536} $a
echo "E2E before $a"
echo "${IDLE_MARKER}"
read -r answer
echo "E2E resumed $answer"
check before-again ${L.beforeOffset / 65536} $a
dd if=/dev/urandom of=/tmp/b bs=65536 count=${blocks} 2>/dev/null
b=$(md5sum /tmp/b | cut -d' ' -f1)
dd if=/tmp/b of=$dev bs=65536 seek=${L.afterOffset / 65536} oflag=direct conv=notrunc,fsync 2>/dev/null || fail=1
check after ${L.afterOffset / 65536} $b
echo "E2E after $b"
echo "E2E done $fail"
exit $fail
`;
}

/** Problems in a run of {@link reconnectScript}. */
export function checkReconnectRun(output: string, image: string): string[] {
  const L = RECONNECT_LAYOUT;
  const problems: string[] = [];
  const text = output.replaceAll('\r', '');
  for (const bad of text.matchAll(/^E2E (verify-\S+ BAD.*)$/gm)) problems.push(`guest: ${bad[1]}`);
  for (const name of ['before', 'before-again', 'after']) {
    if (!new RegExp(`^E2E verify-${name} ok$`, 'm').test(text))
      problems.push(`no verify-${name} ok`);
  }
  if (!/^E2E resumed go$/m.test(text)) problems.push('the guest did not resume');
  if (!/^E2E done 0$/m.test(text)) problems.push('the script did not finish cleanly');
  for (const line of text.matchAll(/^.*(I\/O error|blk_update_request).*$/gm)) {
    problems.push(`kernel: ${line[0].trim()}`);
  }
  for (const [name, offset] of [
    ['before', L.beforeOffset],
    ['after', L.afterOffset],
  ] as const) {
    const wrote = new RegExp(`^E2E ${name} ([0-9a-f]{32})$`, 'm').exec(text)?.[1];
    const got = md5(readRange(image, offset, L.writeBytes));
    if (wrote === undefined) problems.push(`the guest did not report its ${name} write`);
    else if (got !== wrote)
      problems.push(`image: ${name} write has md5 ${got}, guest wrote ${wrote}`);
  }
  return problems;
}

/** Where the busy scenario's writers write: `writers` regions of `regionBytes` from `offset`. */
export const BUSY_LAYOUT = {
  size: 32 * MiB,
  offset: 16 * MiB,
  writers: 4,
  regionBytes: 1 * MiB,
} as const;

/** The line the guest prints once its writers are running. */
export const BUSY_MARKER = 'E2E busy';

/**
 * The busy reconnect scenario: four writers each rewrite their own region of the disk with their
 * own random data (direct I/O, a flush after each pass, which keeps the backend in
 * fdatasync on the host for a while), so requests are in flight at any instant; the host
 * kills the backend meanwhile and starts a new one. When the host types `go`, the writers finish
 * their pass and the guest reads every region back. A request lost hangs a writer; one completed
 * twice breaks the guest's ring ("is not a head", I/O errors).
 */
export function busyReconnectScript(): string {
  const L = BUSY_LAYOUT;
  const blocks = L.regionBytes / 65536;
  const lines = [`dev=/dev/vda`, 'fail=0'];
  for (let w = 0; w < L.writers; w++) {
    const seek = (L.offset + w * L.regionBytes) / 65536;
    lines.push(
      `dd if=/dev/urandom of=/tmp/w${w} bs=65536 count=${blocks} 2>/dev/null`,
      `echo "E2E writer-${w} $(md5sum /tmp/w${w} | cut -d' ' -f1)"`,
      `(n=0; while [ ! -e /tmp/stop ]; do dd if=/tmp/w${w} of=$dev bs=65536 seek=${seek} oflag=direct conv=notrunc,fsync 2>/dev/null || echo "E2E writer-${w} FAILED"; n=$((n+1)); done; echo "E2E writer-${w} passes $n") &`,
    );
  }
  lines.push(
    `echo "${BUSY_MARKER}"`,
    'read -r answer',
    'echo "E2E resumed $answer"',
    'touch /tmp/stop',
    'wait',
  );
  for (let w = 0; w < L.writers; w++) {
    const skip = (L.offset + w * L.regionBytes) / 65536;
    lines.push(
      `got=$(dd if=$dev bs=65536 skip=${skip} count=${blocks} iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)`,
      `if [ "$got" = "$(md5sum /tmp/w${w} | cut -d' ' -f1)" ]; then echo "E2E verify-writer-${w} ok"; else echo "E2E verify-writer-${w} BAD got $got"; fail=1; fi`,
    );
  }
  lines.push('echo "E2E done $fail"', 'exit $fail', '');
  return lines.join('\n');
}

/** Problems in a run of {@link busyReconnectScript}. */
export function checkBusyReconnectRun(output: string, image: string): string[] {
  const L = BUSY_LAYOUT;
  const problems: string[] = [];
  const text = output.replaceAll('\r', '');
  for (const bad of text.matchAll(/^E2E (verify-\S+ BAD.*|writer-\d+ FAILED)$/gm)) {
    problems.push(`guest: ${bad[1]}`);
  }
  if (!/^E2E resumed go$/m.test(text)) problems.push('the guest did not resume');
  if (!/^E2E done 0$/m.test(text)) problems.push('the script did not finish cleanly');
  for (const line of text.matchAll(/^.*(I\/O error|blk_update_request|is not a head).*$/gm)) {
    problems.push(`kernel: ${line[0].trim()}`);
  }
  for (let w = 0; w < L.writers; w++) {
    if (!new RegExp(`^E2E verify-writer-${w} ok$`, 'm').test(text)) {
      problems.push(`no verify-writer-${w} ok`);
    }
    const wrote = new RegExp(`^E2E writer-${w} ([0-9a-f]{32})$`, 'm').exec(text)?.[1];
    const got = md5(readRange(image, L.offset + w * L.regionBytes, L.regionBytes));
    if (wrote === undefined) problems.push(`writer ${w} did not report its data`);
    else if (got !== wrote)
      problems.push(`image: writer ${w}'s region has md5 ${got}, it wrote ${wrote}`);
  }
  return problems;
}
