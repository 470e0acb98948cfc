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
