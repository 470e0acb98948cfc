/**
 * The vhost-user benchmark (`pnpm --filter e2e bench [-- --reps N --only blk|net]`): the same
 * guest workloads on the same QEMU (TCG, q35, 1 vCPU, 512 MiB) and the same image, served by
 *   blk: (a) our vhost-user-blk, (b) qemu-storage-daemon's vhost-user-blk export, (c) QEMU's
 *        built-in virtio-blk — all with O_DIRECT on the host; dd 1 MiB sequential write and read
 *        of 512 MiB with O_DIRECT in the guest, fio 4 KiB random read at QD32;
 *   net: our vhost-user net (TAP backend) vs QEMU's built-in virtio-net on TAP (vhost=off);
 *        iperf3 guest → host and host → guest, the host end in a network namespace of its own.
 * Runs are interleaved, and each round starts one server later than the one before (a, b, c, then
 * b, c, a, then c, a, b, ...) so that no server always boots first or after the same one; the
 * medians and the ratios go to bench-results/vhost-user.json and a table is printed.
 */

import { execFileSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  type AttachedBlk,
  type AttachedNet,
  attachBlk,
  attachNet,
  BLK_SERVER_NAMES,
  type BlkServer,
  NET_SERVER_NAMES,
  type NetServer,
} from './attach.js';
import { repositoryRoot } from './backend.js';
import { exitOnSignals, onCleanup, runCleanups } from './cleanup.js';
import { type DebianTool, fetchDebianTool } from './debian-tools.js';
import { outputTail } from './errors.js';
import { prepareX86Guest, scriptInitramfs } from './guest.js';
import { NetworkNamespace } from './netns.js';
import { ManagedProcess } from './process.js';
import { runGuestVm } from './qemu.js';
import { blkBenchScript, median, netBenchScript, parseBenchOutput } from './scenarios/bench.js';
import { NET_LAYOUT } from './scenarios/net.js';
import { netnsSkipReason, storageDaemonSkipReason, virtkitSkipReason } from './skip.js';

const RUN_TIMEOUT_MS = 300_000;

interface Options {
  readonly reps: number;
  readonly only: 'blk' | 'net' | undefined;
  readonly seqMiB: number;
  readonly fioSeconds: number;
  readonly iperfSeconds: number;
  readonly imageDir: string;
  /** All servers read and write through the host page cache (no O_DIRECT on the host). */
  readonly hostCache: boolean;
  readonly output: string;
  /** Appended to every QEMU command line (all servers alike). */
  readonly qemuArgs: readonly string[];
  /** Only these configurations (keys such as `virtkitSync`, `qsd`), or all. */
  readonly configs: ReadonlySet<string> | undefined;
}

function parseBenchArgs(args: string[]) {
  return parseArgs({
    args,
    options: {
      reps: { type: 'string', default: '3' },
      only: { type: 'string' },
      'seq-mib': { type: 'string', default: '512' },
      'fio-seconds': { type: 'string', default: '10' },
      'iperf-seconds': { type: 'string', default: '5' },
      'image-dir': { type: 'string' },
      'host-cache': { type: 'boolean', default: false },
      'qemu-arg': { type: 'string', multiple: true },
      configs: { type: 'string' },
      output: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    allowPositionals: false,
  });
}

function parseOptions(argv: string[]): Options {
  let parsed: ReturnType<typeof parseBenchArgs>;
  try {
    // pnpm passes the `--` that separates its own options through.
    parsed = parseBenchArgs(argv[0] === '--' ? argv.slice(1) : argv);
  } catch (error) {
    fail((error as Error).message);
  }
  const { values } = parsed;
  if (values.help) {
    console.log(
      'usage: bench [--reps N] [--only blk|net] [--seq-mib 512] [--fio-seconds 10] [--iperf-seconds 5]\n' +
        '             [--image-dir DIR (default /dev/shm; /var/tmp with --host-cache)] [--host-cache]\n' +
        '             [--qemu-arg=ARG ...] [--output FILE]\n' +
        `             [--configs KEY,... (of ${[...new Set([...BLK_CONFIGS, ...NET_CONFIGS].map((c) => c.key))].join(', ')})]`,
    );
    process.exit(0);
  }
  const int = (name: string, text: string, min: number): number => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < min) fail(`--${name} must be an integer >= ${min}`);
    return value;
  };
  if (values.only !== undefined && values.only !== 'blk' && values.only !== 'net') {
    fail('--only must be blk or net');
  }
  return {
    reps: int('reps', values.reps, 1),
    only: values.only as Options['only'],
    seqMiB: int('seq-mib', values['seq-mib'], 1),
    fioSeconds: int('fio-seconds', values['fio-seconds'], 0),
    iperfSeconds: int('iperf-seconds', values['iperf-seconds'], 1),
    // tmpfs takes the host's disk (and its noise) out of a comparison of I/O paths. Through the
    // page cache, the image sits on a disk's file system (its data stays cached: it is written
    // in full first, and the host has the memory).
    imageDir:
      values['image-dir'] ??
      (values['host-cache']
        ? existsSync('/var/tmp')
          ? '/var/tmp'
          : tmpdir()
        : existsSync('/dev/shm')
          ? '/dev/shm'
          : tmpdir()),
    hostCache: values['host-cache'],
    qemuArgs: values['qemu-arg'] ?? [],
    configs: parseConfigs(values.configs),
    output:
      values.output ??
      join(
        repositoryRoot(),
        'bench-results',
        values['host-cache'] ? 'vhost-user-host-cache.json' : 'vhost-user.json',
      ),
  };
}

function parseConfigs(text: string | undefined): ReadonlySet<string> | undefined {
  if (text === undefined) return undefined;
  const known = new Set([...BLK_CONFIGS, ...NET_CONFIGS].map((config) => config.key));
  const keys = text.split(',').filter(Boolean);
  const unknown = keys.filter((key) => !known.has(key));
  if (keys.length === 0 || unknown.length > 0) {
    fail(`--configs takes keys among ${[...known].join(', ')}; got '${text}'`);
  }
  return new Set(keys);
}

function fail(message: string): never {
  console.error(`bench: ${message}`);
  process.exit(2);
}

const log = (message: string): void => console.log(`[bench] ${message}`);

/** metric → server → one value per run. */
type Samples = Record<string, Record<string, number[]>>;

function record(samples: Samples, metric: string, server: string, value: number): void {
  samples[metric] ??= {};
  samples[metric][server] ??= [];
  samples[metric][server].push(value);
}

async function main(): Promise<void> {
  exitOnSignals((signal) => log(`${signal}: stopping, nothing written`));
  const options = parseOptions(process.argv.slice(2));
  const loadStart = loadavg().map((load) => round(load));
  const notes: string[] = [];
  const note = (text: string): void => {
    notes.push(text);
    log(`note: ${text}`);
  };

  if (options.qemuArgs.length > 0) {
    note(`every QEMU run (all servers alike) also got: ${options.qemuArgs.join(' ')}`);
  }
  log('preparing the guest');
  const guest = await prepareX86Guest(({ step, detail }) => log(`guest ${step}: ${detail}`));
  const tool = async (pkg: string): Promise<DebianTool | undefined> => {
    try {
      const fetched = await fetchDebianTool({
        pkg,
        program: `/usr/bin/${pkg}`,
        onProgress: (detail) => log(`${pkg}: ${detail}`),
      });
      log(
        `${pkg}: ${fetched.guestFiles.length} files, ${(fetched.bytes / 2 ** 20).toFixed(1)} MiB in the guest`,
      );
      return fetched;
    } catch (error) {
      note(`${pkg} unavailable (${(error as Error).message})`);
      return undefined;
    }
  };

  const work = mkdtempSync(join(tmpdir(), 'virtkit-bench-'));
  const blkSamples: Samples = {};
  const netSamples: Samples = {};
  const blkServers: BlkConfig[] = [];
  const netServers: NetConfig[] = [];
  try {
    if (options.only !== 'net') {
      const fio = options.fioSeconds > 0 ? await tool('fio') : undefined;
      if (!fio) note('no fio in the guest: 4k random read not measured');
      else
        note(
          `fio and its ${fio.guestFiles.length - 1} libraries from Debian add ${(fio.bytes / 2 ** 20).toFixed(0)} MiB to the initramfs (boot time only)`,
        );
      const initrd = await scriptInitramfs(
        blkBenchScript({ seqMiB: options.seqMiB, fioSeconds: fio ? options.fioSeconds : 0 }),
        fio?.guestFiles ?? [],
      );
      for (const config of BLK_CONFIGS) {
        if (options.configs && !options.configs.has(config.key)) continue;
        const why =
          config.server === 'virtkit'
            ? virtkitSkipReason()
            : config.server === 'qsd'
              ? storageDaemonSkipReason()
              : undefined;
        if (why) note(`${config.name} not measured: ${why}`);
        else blkServers.push(config);
      }
      const imageDir = mkdtempSync(join(options.imageDir, 'virtkit-bench-'));
      onCleanup('remove the benchmark image', () =>
        rmSync(imageDir, { recursive: true, force: true }),
      );
      const image = join(imageDir, 'bench.img');
      fillImage(image, options.seqMiB + 64);
      log(
        `block: ${blkServers.map((config) => config.key).join(', ')} × ${options.reps}, image ${image}`,
      );
      for (let rep = 1; rep <= options.reps; rep++) {
        for (const config of rotated(blkServers, rep - 1)) {
          const server = config.key;
          const values = await blkRun(config, guest.kernel, initrd, image, work, options);
          const seqMiB = options.seqMiB;
          // A boot's value is the median of its repeats (the first write included).
          const write = medianOf(values.get('seq-write-us'));
          const read = medianOf(values.get('seq-read-us'));
          const iops = medianOf(values.get('randread-iops'));
          if (write) record(blkSamples, 'seqWriteMiBps', server, seqMiB / (write / 1e6));
          if (read) record(blkSamples, 'seqReadMiBps', server, seqMiB / (read / 1e6));
          if (iops) record(blkSamples, 'randRead4kIops', server, iops);
          log(
            `block #${rep} ${server}: write ${fmt(write && seqMiB / (write / 1e6))} MiB/s, read ${fmt(read && seqMiB / (read / 1e6))} MiB/s, 4k randread ${fmt(iops)} IOPS`,
          );
        }
      }
    }

    if (options.only !== 'blk') {
      const nsWhy = netnsSkipReason();
      const iperf = nsWhy ? undefined : await tool('iperf3');
      if (nsWhy) note(`net not measured: ${nsWhy}`);
      else if (!iperf) note('net not measured: no iperf3');
      else {
        for (const config of NET_CONFIGS) {
          if (options.configs && !options.configs.has(config.key)) continue;
          const why = config.server === 'virtkit' ? virtkitSkipReason() : undefined;
          if (why) note(`${config.name} not measured: ${why}`);
          else netServers.push(config);
        }
        const initrd = await scriptInitramfs(
          netBenchScript({ seconds: options.iperfSeconds }),
          iperf.guestFiles,
        );
        log(`net: ${netServers.map((config) => config.key).join(', ')} × ${options.reps}`);
        for (let rep = 1; rep <= options.reps; rep++) {
          for (const config of rotated(netServers, rep - 1)) {
            const values = await netRun(
              config,
              guest.kernel,
              initrd,
              iperf,
              work,
              options.qemuArgs,
            );
            const up = medianOf(values.get('guest-to-host-mbps'));
            const down = medianOf(values.get('host-to-guest-mbps'));
            if (up) record(netSamples, 'guestToHostMbps', config.key, up);
            if (down) record(netSamples, 'hostToGuestMbps', config.key, down);
            log(
              `net #${rep} ${config.key}: guest→host ${fmt(up)} Mbit/s, host→guest ${fmt(down)} Mbit/s`,
            );
          }
        }
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }

  const blk = summarize(blkSamples, [
    ['virtkitOverQsd', 'virtkit', 'qsd'],
    ['virtkitOverBuiltin', 'virtkit', 'builtin'],
    ['virtkitSyncOverQsd', 'virtkitSync', 'qsd'],
    ['virtkitSyncOverBuiltin', 'virtkitSync', 'builtin'],
  ]);
  const net = summarize(netSamples, [
    ['virtkitOverBuiltin', 'virtkit', 'builtin'],
    ['virtkitOverBuiltinIntx', 'virtkit', 'builtinIntx'],
  ]);
  const result = {
    date: new Date().toISOString(),
    setup: {
      qemu: execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8' }).split('\n')[0],
      accel: 'tcg',
      machine: 'q35, 1 vCPU, 512 MiB shared (memfd) RAM',
      guestKernel: guest.kernelRelease,
      host: `Linux ${release()}, ${cpus().length} CPUs (${cpus()[0]?.model ?? 'unknown'})`,
      // The machine is shared: the load says how much the numbers can be trusted.
      loadAverage: { start: loadStart, end: loadavg().map((load) => round(load)) },
      node: process.version,
      reps: options.reps,
      order: 'interleaved: one boot per server per round, each round starting one server later',
      qemuArgs: options.qemuArgs,
      blk: {
        servers: Object.fromEntries(blkServers.map((config) => [config.key, config.name])),
        hostIO: options.hostCache
          ? 'the host page cache for all (virtkit direct=off, qsd cache.direct=off, QEMU cache=writeback); qsd and QEMU use their default aio=threads'
          : 'O_DIRECT on the host for all (virtkit direct=on, qsd cache.direct=on, QEMU cache=none); qsd and QEMU use their default aio=threads',
        image: `raw, ${options.seqMiB + 64} MiB, written in full before the runs, in ${options.imageDir}`,
        workloads: `dd bs=1M count=${options.seqMiB} oflag=direct, then iflag=direct, 3 times each per boot (a boot counts its median); fio randread 4k iodepth=32 libaio direct=1 ${options.fioSeconds}s over ${options.seqMiB} MiB`,
      },
      net: {
        servers: Object.fromEntries(netServers.map((config) => [config.key, config.name])),
        workloads: `iperf3 -t ${options.iperfSeconds} from the guest to a server in a network namespace, and -R`,
      },
    },
    blk,
    net,
    notes,
  };
  mkdirSync(join(options.output, '..'), { recursive: true });
  writeFileSync(options.output, `${JSON.stringify(result, null, 2)}\n`);
  printTable(
    'block (medians)',
    blk,
    ['virtkit', 'virtkitSync', 'qsd', 'builtin'],
    [
      ['virtkitOverQsd', 'ours/qsd'],
      ['virtkitSyncOverQsd', 'sync/qsd'],
      ['virtkitOverBuiltin', 'ours/built-in'],
      ['virtkitSyncOverBuiltin', 'sync/built-in'],
    ],
  );
  printTable(
    'net (medians)',
    net,
    ['virtkit', 'builtin', 'builtinIntx'],
    [
      ['virtkitOverBuiltin', 'ours/built-in'],
      ['virtkitOverBuiltinIntx', 'ours/built-in INTx'],
    ],
  );
  log(`wrote ${options.output}`);
}

/** A block configuration the benchmark measures. */
interface BlkConfig {
  readonly key: string;
  readonly server: BlkServer;
  readonly name: string;
  readonly aio?: 'threads' | 'sync';
}

/**
 * Ours with each I/O engine (the default `aio=threads`, and `aio=sync`, I/O on the device's thread
 * as Firecracker's default engine does), qemu-storage-daemon, and QEMU's own virtio-blk. With the
 * image on tmpfs (the default `--image-dir`), `aio=threads` also runs every transfer on the
 * device's thread (a memory file never waits for a disk), so the two measure the same path: how
 * far apart they land is the noise of the run.
 */
const BLK_CONFIGS: readonly BlkConfig[] = [
  {
    key: 'virtkit',
    server: 'virtkit',
    name: `${BLK_SERVER_NAMES.virtkit}, aio=threads (an image on tmpfs: all on the device's thread; else page-cached reads there, the rest on workers), interrupt moderation (default)`,
  },
  {
    key: 'virtkitSync',
    server: 'virtkit',
    name: `${BLK_SERVER_NAMES.virtkit}, aio=sync, interrupt moderation (default)`,
    aio: 'sync',
  },
  { key: 'qsd', server: 'qsd', name: BLK_SERVER_NAMES.qsd },
  { key: 'builtin', server: 'builtin', name: BLK_SERVER_NAMES.builtin },
];

/** One boot running the block workloads against `config`'s server. */
async function blkRun(
  config: BlkConfig,
  kernel: string,
  initrd: string,
  image: string,
  work: string,
  options: Options,
): Promise<Map<string, number[]>> {
  const socketDir = mkdtempSync(join(work, `${config.key}-`));
  let disk: AttachedBlk | undefined;
  try {
    disk = await attachBlk(config.server, {
      image,
      socketDir,
      direct: !options.hostCache,
      ...(config.aio ? { aio: config.aio } : {}),
    });
    const run = await runGuestVm({
      kernel,
      initrd,
      append: 'quiet',
      blk: [disk.attachment],
      extraArgs: options.qemuArgs,
      timeoutMs: RUN_TIMEOUT_MS,
    });
    return checked(`block ${config.key}`, run.output, run.timedOut, disk.backend?.process);
  } finally {
    await disk?.close();
  }
}

/** A network configuration the benchmark measures. */
interface NetConfig {
  readonly key: string;
  readonly server: NetServer;
  readonly name: string;
  readonly msix?: boolean;
}

/**
 * Ours (without MSI-X: QEMU 7.2 under TCG crashes with a vhost-user NIC that has it), QEMU's
 * own NIC as configured by default (MSI-X), and QEMU's own with INTx like ours.
 */
const NET_CONFIGS: readonly NetConfig[] = [
  { key: 'virtkit', server: 'virtkit', name: `${NET_SERVER_NAMES.virtkit}, INTx` },
  { key: 'builtin', server: 'builtin', name: `${NET_SERVER_NAMES.builtin}, MSI-X` },
  { key: 'builtinIntx', server: 'builtin', name: `${NET_SERVER_NAMES.builtin}, INTx`, msix: false },
];

/** One boot running iperf3 both ways through `config`. */
async function netRun(
  config: NetConfig,
  kernel: string,
  initrd: string,
  iperf: DebianTool,
  work: string,
  qemuArgs: readonly string[],
): Promise<Map<string, number[]>> {
  const L = NET_LAYOUT;
  const netns = await NetworkNamespace.create();
  let iperfServer: ManagedProcess | undefined;
  let nic: AttachedNet | undefined;
  try {
    const tap = await netns.addTap({ address: `${L.hostAddress}/${L.prefix}` });
    const loader = iperf.guestFiles.find((file) => file.path.endsWith('ld-linux-x86-64.so.2'))!;
    iperfServer = ManagedProcess.start({
      label: 'iperf3 server',
      command: loader.source,
      args: [
        '--library-path',
        iperf.libraryPath,
        iperf.program,
        '-s',
        '-B',
        L.hostAddress,
        '--forceflush',
      ],
      netns: netns.name,
      stdin: 'ignore',
    });
    await iperfServer.waitFor('Server listening', { timeoutMs: 10_000 });
    nic = await attachNet(config.server, {
      netns: netns.name,
      tap,
      socketDir: mkdtempSync(join(work, `${config.key}-`)),
      ...(config.msix !== undefined ? { msix: config.msix } : {}),
    });
    const run = await runGuestVm({
      kernel,
      initrd,
      append: 'quiet',
      net: [nic.attachment],
      ...(nic.qemuNetns !== undefined ? { netns: nic.qemuNetns } : {}),
      extraArgs: qemuArgs,
      timeoutMs: RUN_TIMEOUT_MS,
    });
    return checked(`net ${config.key}`, run.output, run.timedOut, nic.backend?.process);
  } finally {
    await nic?.close();
    await iperfServer?.stop();
    netns.destroy();
  }
}

function checked(
  what: string,
  output: string,
  timedOut: boolean,
  backend: ManagedProcess | undefined,
): Map<string, number[]> {
  const { values, errors } = parseBenchOutput(output);
  if (timedOut || errors.length > 0 || !/^BENCH done\r?$/m.test(output)) {
    const backendLog = backend ? `\nbackend:\n${outputTail(backend.output, 20)}` : '';
    console.error(
      `[bench] ${what} failed${timedOut ? ' (timed out)' : ''}: ${errors.join('; ')}\n${outputTail(output, 30)}${backendLog}`,
    );
  }
  return values;
}

/** `list` starting at its `by`-th element (modulo its length) and wrapping around. */
function rotated<T>(list: readonly T[], by: number): T[] {
  if (list.length === 0) return [];
  const start = ((by % list.length) + list.length) % list.length;
  return [...list.slice(start), ...list.slice(0, start)];
}

function medianOf(values: readonly number[] | undefined): number | undefined {
  return values && values.length > 0 ? median(values) : undefined;
}

/** Writes `mib` MiB of non-zero data, so no run pays for block allocation in the host's filesystem. */
function fillImage(path: string, mib: number): void {
  const chunk = Buffer.alloc(1 << 20, 0xa5);
  const fd = openSync(path, 'w');
  try {
    for (let i = 0; i < mib; i++) writeSync(fd, chunk, 0, chunk.length, i << 20);
  } finally {
    closeSync(fd);
  }
}

interface Summary {
  readonly medians: Record<string, Record<string, number>>;
  readonly runs: Samples;
  /** Ratio of the two configurations' medians. */
  readonly ratios: Record<string, Record<string, number>>;
  /**
   * Median of the ratios within each round (the runs are interleaved, so a round's two boots
   * saw the same load): steadier than the ratio of medians on a shared machine.
   */
  readonly ratiosPerRound: Record<string, Record<string, number>>;
}

function summarize(samples: Samples, ratios: readonly [string, string, string][]): Summary {
  const medians: Summary['medians'] = {};
  const ratioTable: Summary['ratios'] = {};
  const perRound: Summary['ratiosPerRound'] = {};
  for (const [metric, byServer] of Object.entries(samples)) {
    medians[metric] = {};
    for (const [server, values] of Object.entries(byServer)) {
      medians[metric][server] = round(median(values));
    }
    for (const [name, ours, theirs] of ratios) {
      const a = medians[metric][ours];
      const b = medians[metric][theirs];
      if (a !== undefined && b !== undefined && b > 0) {
        ratioTable[name] ??= {};
        ratioTable[name][metric] = Math.round((a / b) * 1000) / 1000;
      }
      // Only when every round measured both (a failed measurement would shift the pairs).
      const ourRuns = byServer[ours];
      const theirRuns = byServer[theirs];
      if (ourRuns && theirRuns && ourRuns.length === theirRuns.length && ourRuns.length > 0) {
        if (theirRuns.every((value) => value > 0)) {
          perRound[name] ??= {};
          perRound[name][metric] =
            Math.round(median(ourRuns.map((value, i) => value / theirRuns[i]!)) * 1000) / 1000;
        }
      }
    }
  }
  return {
    medians,
    runs: mapValues(samples, (byServer) => mapValues(byServer, (v) => v.map(round))),
    ratios: ratioTable,
    ratiosPerRound: perRound,
  };
}

function mapValues<T, U>(record: Record<string, T>, map: (value: T) => U): Record<string, U> {
  return Object.fromEntries(Object.entries(record).map(([key, value]) => [key, map(value)]));
}

function round(value: number): number {
  return Math.round(value * 10) / 10;
}

function fmt(value: number | undefined): string {
  return value === undefined || value === 0 ? '-' : value.toFixed(1);
}

function printTable(
  title: string,
  summary: Summary,
  servers: readonly string[],
  ratios: readonly [string, string][],
): void {
  const metrics = Object.keys(summary.medians);
  if (metrics.length === 0) return;
  const header = ['metric', ...servers, ...ratios.map(([, label]) => label)];
  const rows = metrics.map((metric) => [
    metric,
    ...servers.map((server) => fmt(summary.medians[metric]?.[server])),
    ...ratios.map(([name]) => {
      const ratio = summary.ratios[name]?.[metric];
      return ratio === undefined ? '-' : `${ratio.toFixed(2)}×`;
    }),
  ]);
  const widths = header.map((_, i) => Math.max(...[header, ...rows].map((row) => row[i]!.length)));
  const line = (row: string[]): string =>
    row
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)))
      .join('  ');
  console.log(`\n${title}`);
  console.log(line(header));
  for (const row of rows) console.log(line(row));
  const perRound = ratios
    .flatMap(([name, label]) =>
      metrics.map((metric) => {
        const ratio = summary.ratiosPerRound[name]?.[metric];
        return ratio === undefined ? undefined : `${label} ${metric} ${ratio.toFixed(2)}×`;
      }),
    )
    .filter((text) => text !== undefined);
  if (perRound.length > 0) console.log(`median of per-round ratios: ${perRound.join(', ')}`);
}

main().then(
  () => runCleanups(),
  (error: unknown) => {
    console.error(`bench failed: ${(error as Error).stack ?? String(error)}`);
    runCleanups();
    process.exit(1);
  },
);
