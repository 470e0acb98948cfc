// Measures what the README quotes: the cost of one synchronous system call through koffi, and
// the latency of waking JavaScript from another thread through an eventfd, three ways.
// Run with `pnpm --filter @virtkit/linux bench` (builds dist first). Numbers vary with the host.
import { readSync, writeSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import koffi from 'koffi';
import {
  close,
  drainEventfd,
  EFD_CLOEXEC,
  eventfd,
  FdWatcher,
  signalEventfd,
} from '../dist/index.js';

const ROUNDS = 200_000;
const WAKES = 20_000;

function nsPer(count, body) {
  for (let i = 0; i < 10_000; i++) body();
  const start = process.hrtime.bigint();
  for (let i = 0; i < count; i++) body();
  return Number(process.hrtime.bigint() - start) / count;
}

function syncCalls() {
  const fd = eventfd();
  const libc = koffi.load('libc.so.6');
  const write = libc.func('long write(int fd, const void *buf, size_t count)');
  const read = libc.func('long read(int fd, void *buf, size_t count)');
  const one = new BigUint64Array([1n]);
  const scratch = new BigUint64Array(1);
  const results = {
    'signalEventfd + drainEventfd (2 syscalls)': nsPer(ROUNDS, () => {
      signalEventfd(fd);
      drainEventfd(fd);
    }),
    'raw koffi write + read (2 syscalls)': nsPer(ROUNDS, () => {
      write(fd, one, 8);
      read(fd, scratch, 8);
    }),
    'node:fs writeSync + readSync (2 syscalls)': nsPer(ROUNDS, () => {
      writeSync(fd, one);
      readSync(fd, scratch);
    }),
  };
  close(fd);
  return results;
}

// A worker signals `toMain` and blocks reading `toWorker`; the main thread answers by one of the
// mechanisms below. Reported: microseconds per round trip (two wakes).
const workerSource = `
  import { parentPort, workerData } from 'node:worker_threads';
  import { drainEventfd, signalEventfd } from ${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)};
  const { toMain, toWorker, rounds, mode } = workerData;
  if (mode === 'echo') {
    for (let i = 0; i < rounds; i++) { drainEventfd(toMain); signalEventfd(toWorker); }
    parentPort.postMessage(0);
  } else {
    const start = performance.now();
    for (let i = 0; i < rounds; i++) { signalEventfd(toMain); drainEventfd(toWorker); }
    parentPort.postMessage((performance.now() - start) * 1000 / rounds);
  }
`;

function runWorker(data) {
  const worker = new Worker(new URL(`data:text/javascript,${encodeURIComponent(workerSource)}`), {
    workerData: data,
  });
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

async function wakeLatency() {
  const results = {};
  const toWorker = eventfd({ flags: EFD_CLOEXEC }); // blocking: the worker sleeps in read()

  // 1. uv_poll on the main loop (FdWatcher): what this package uses.
  {
    const toMain = eventfd();
    const watcher = new FdWatcher(toMain, () => {
      drainEventfd(toMain);
      signalEventfd(toWorker);
    });
    results['FdWatcher (uv_poll on the main loop)'] = await runWorker({
      toMain,
      toWorker,
      rounds: WAKES,
    });
    watcher.close();
    close(toMain);
  }

  // 2. koffi .async: a blocking read on koffi's thread pool, re-issued after each wake.
  {
    const toMain = eventfd({ flags: EFD_CLOEXEC });
    const read = koffi.load('libc.so.6').func('long read(int fd, void *buf, size_t count)');
    const scratch = new BigUint64Array(1);
    let remaining = WAKES;
    const loop = () =>
      read.async(toMain, scratch, 8, () => {
        signalEventfd(toWorker);
        if (--remaining > 0) loop();
      });
    loop();
    results['koffi .async blocking read (thread pool)'] = await runWorker({
      toMain,
      toWorker,
      rounds: WAKES,
    });
    close(toMain);
  }

  // 3. Two workers blocking in read(): the floor, with no event loop involved.
  {
    const toMain = eventfd({ flags: EFD_CLOEXEC });
    const echo = runWorker({ toMain, toWorker, rounds: WAKES, mode: 'echo' });
    results['worker ↔ worker, both blocking in read()'] = await runWorker({
      toMain,
      toWorker,
      rounds: WAKES,
    });
    await echo;
    close(toMain);
  }
  close(toWorker);
  return results;
}

console.log(`Node ${process.version}, koffi ${koffi.version}`);
for (const [name, ns] of Object.entries(syncCalls())) console.log(`${name}: ${ns.toFixed(0)} ns`);
for (const [name, us] of Object.entries(await wakeLatency())) {
  console.log(`${name}: ${us.toFixed(1)} µs per round trip`);
}
