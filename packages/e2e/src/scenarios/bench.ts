/**
 * Guest workloads of the benchmark and the parsing of what they print. Times are taken inside
 * the guest with busybox `adjtimex` (microseconds); results are `BENCH <metric> <value>` lines.
 */

import { NET_LAYOUT } from './net.js';

/** Shell function printing the guest's wall clock in microseconds. */
const NOW_US = `now_us() { adjtimex | awk '/tv_sec/ { s = $2 } /tv_usec/ { u = $2 } END { printf "%d%06d\\n", s, u }'; }`;

/** Options of {@link blkBenchScript}. */
export interface BlkBenchOptions {
  /** Bytes moved by each sequential dd; default 512 MiB. */
  readonly seqMiB?: number;
  /** Seconds of fio 4k random read (0 or no fio in the guest: skipped); default 10. */
  readonly fioSeconds?: number;
  /** Each dd runs this many times in a row (one `BENCH` line each); default 3. */
  readonly repeats?: number;
}

/**
 * Sequential write then read of the first `seqMiB` of /dev/vda (dd, 1 MiB blocks, O_DIRECT),
 * then fio 4 KiB random reads at queue depth 32 (libaio, O_DIRECT) over the same range if the
 * guest has fio.
 */
export function blkBenchScript(options: BlkBenchOptions = {}): string {
  const mib = options.seqMiB ?? 512;
  const fioSeconds = options.fioSeconds ?? 10;
  const repeats = Array.from({ length: options.repeats ?? 3 }, (_, i) => i + 1).join(' ');
  return `${NOW_US}
dev=/dev/vda
for i in ${repeats}; do
  t0=$(now_us); dd if=/dev/zero of=$dev bs=1M count=${mib} oflag=direct 2>/tmp/dd || { echo "BENCH error seq-write $(tail -n 1 /tmp/dd)"; }; t1=$(now_us)
  echo "BENCH seq-write-us $((t1 - t0))"
done
for i in ${repeats}; do
  t0=$(now_us); dd if=$dev of=/dev/null bs=1M count=${mib} iflag=direct 2>/tmp/dd || { echo "BENCH error seq-read $(tail -n 1 /tmp/dd)"; }; t1=$(now_us)
  echo "BENCH seq-read-us $((t1 - t0))"
done
if [ ${fioSeconds} -gt 0 ] && command -v fio >/dev/null; then
  if fio --name=randread --filename=$dev --direct=1 --rw=randread --bs=4k --iodepth=32 --ioengine=libaio \\
      --size=${mib}M --ramp_time=1 --runtime=${fioSeconds} --time_based --minimal > /tmp/fio 2>&1; then
    echo "BENCH randread-iops $(cut -d';' -f8 /tmp/fio)"
  else
    echo "BENCH error fio $(tail -n 1 /tmp/fio)"
  fi
fi
echo "BENCH done"
`;
}

/** Options of {@link netBenchScript}. */
export interface NetBenchOptions {
  /** Seconds of each iperf3 run; default 5. */
  readonly seconds?: number;
}

/** iperf3 from the guest to the host's server in the namespace, then reversed (-R). */
export function netBenchScript(options: NetBenchOptions = {}): string {
  const L = NET_LAYOUT;
  const seconds = options.seconds ?? 5;
  const receiver = `grep receiver /tmp/iperf | grep -o '[0-9.]* Mbits/sec' | cut -d' ' -f1`;
  return `ip addr add ${L.guestAddress}/${L.prefix} dev eth0
ip link set eth0 up
ping -c 1 -W 10 ${L.hostAddress} >/dev/null 2>&1 || echo "BENCH error ping"
if iperf3 -c ${L.hostAddress} -t ${seconds} -f m > /tmp/iperf 2>&1; then
  echo "BENCH guest-to-host-mbps $(${receiver})"
else
  echo "BENCH error iperf3 $(tail -n 1 /tmp/iperf)"
fi
if iperf3 -c ${L.hostAddress} -t ${seconds} -f m -R > /tmp/iperf 2>&1; then
  echo "BENCH host-to-guest-mbps $(${receiver})"
else
  echo "BENCH error iperf3-R $(tail -n 1 /tmp/iperf)"
fi
echo "BENCH done"
`;
}

/**
 * `BENCH <metric> <number>` lines → metric → values in order (a metric may repeat);
 * `BENCH error ...` lines → errors.
 */
export function parseBenchOutput(output: string): {
  values: Map<string, number[]>;
  errors: string[];
} {
  const values = new Map<string, number[]>();
  const errors: string[] = [];
  for (const match of output.replaceAll('\r', '').matchAll(/^BENCH (\S+) ?(.*)$/gm)) {
    const [, key, rest] = match;
    if (key === 'error') errors.push(rest!);
    else if (key !== 'done') {
      const value = Number(rest);
      if (rest === '' || !Number.isFinite(value)) errors.push(`${key}: not a number: ${rest}`);
      else values.set(key!, [...(values.get(key!) ?? []), value]);
    }
  }
  return { values, errors };
}

/** Median of a non-empty list (mean of the middle two for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
