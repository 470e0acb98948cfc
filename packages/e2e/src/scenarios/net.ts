/**
 * The network scenario: the guest's eth0 and a TAP interface in a namespace of the test share a
 * /24; the guest pings the host, downloads random bytes from the host's peer and uploads its own,
 * and both sides compare sha256 digests.
 */

import type { TransferReport } from '../peer.js';

/** Addresses and ports of the scenario (inside the test's own namespace). */
export const NET_LAYOUT = {
  hostAddress: '10.77.0.1',
  guestAddress: '10.77.0.2',
  prefix: 24,
  /** The host sends on this port (guest downloads). */
  downloadPort: 5001,
  /** The host receives on this port (guest uploads). */
  uploadPort: 5002,
  downloadBytes: 8 << 20,
  uploadBytes: 8 << 20,
} as const;

/** Brings eth0 up with the guest's address (shell lines shared with the benchmark and main). */
export function guestNetUp(): string {
  const L = NET_LAYOUT;
  return `ip addr add ${L.guestAddress}/${L.prefix} dev eth0
ip link set eth0 up
`;
}

/** The guest script. */
export function netScript(): string {
  const L = NET_LAYOUT;
  return `fail=0
${guestNetUp()}echo "E2E nic $(cat /sys/class/net/eth0/address) features $(cat /sys/class/net/eth0/device/features)"
if ping -c 3 -W 5 ${L.hostAddress} > /tmp/ping 2>&1; then
  echo "E2E ping ok $(grep -o '[0-9]* packets received' /tmp/ping)"
else
  echo "E2E ping failed"; cat /tmp/ping; fail=1
fi
timeout 120 nc ${L.hostAddress} ${L.downloadPort} > /tmp/down
echo "E2E down $(wc -c < /tmp/down) $(sha256sum < /tmp/down | cut -d' ' -f1)"
dd if=/dev/urandom of=/tmp/up bs=65536 count=${L.uploadBytes / 65536} 2>/dev/null
echo "E2E up $(wc -c < /tmp/up) $(sha256sum < /tmp/up | cut -d' ' -f1)"
timeout 120 nc ${L.hostAddress} ${L.uploadPort} < /tmp/up
echo "E2E done $fail"
exit $fail
`;
}

/** Problems in a run of {@link netScript}, given what the host peer reported. */
export function checkNetRun(
  output: string,
  sent: TransferReport | undefined,
  received: TransferReport | undefined,
): string[] {
  const problems: string[] = [];
  const text = output.replaceAll('\r', '');
  if (!/^E2E ping ok 3 packets received$/m.test(text)) problems.push('ping did not get 3 replies');
  const down = /^E2E down (\d+) ([0-9a-f]{64})$/m.exec(text);
  if (!sent) problems.push('the host did not finish sending');
  else if (!down) problems.push('the guest did not report its download');
  else if (Number(down[1]) !== sent.bytes || down[2] !== sent.sha256) {
    problems.push(
      `download: guest got ${down[1]} bytes sha256 ${down[2]}, host sent ${sent.bytes} bytes sha256 ${sent.sha256}`,
    );
  }
  const up = /^E2E up (\d+) ([0-9a-f]{64})$/m.exec(text);
  if (!received) problems.push('the host did not receive the upload');
  else if (!up) problems.push('the guest did not report its upload');
  else if (Number(up[1]) !== received.bytes || up[2] !== received.sha256) {
    problems.push(
      `upload: guest sent ${up[1]} bytes sha256 ${up[2]}, host got ${received.bytes} bytes sha256 ${received.sha256}`,
    );
  }
  if (!/^E2E done 0$/m.test(text)) problems.push('the script did not finish cleanly');
  return problems;
}
