/**
 * The host side of guest TCP transfers: a small Node program run inside a network namespace
 * (`ip netns exec NS node ...`) that serves data to the guest on one port and swallows data from
 * the guest on another, reporting byte counts, sha256 digests and timings as JSON lines.
 */

import { E2eError, outputTail } from './errors.js';
import { ManagedProcess } from './process.js';

/**
 * The peer program (plain JavaScript, run with `node --input-type=module -e`). Arguments: a JSON
 * object `{ host, sendPort, sendBytes, receivePort, receiveBytes }`. Every connection to
 * `sendPort` gets `sendBytes` random bytes, then the peer closes it; every connection to
 * `receivePort` is read until the guest closes it or `receiveBytes` arrived.
 */
const PEER_PROGRAM = String.raw`
import { createServer } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
const options = JSON.parse(process.argv[1]);
const say = (event) => process.stdout.write(JSON.stringify(event) + '\n');
const chunk = 1 << 20;
const servers = [];
if (options.sendPort) {
  servers.push(createServer((socket) => {
    const hash = createHash('sha256');
    const started = process.hrtime.bigint();
    let left = options.sendBytes;
    socket.on('error', (error) => say({ event: 'error', port: options.sendPort, message: error.message }));
    const pump = () => {
      while (left > 0) {
        const data = randomBytes(Math.min(chunk, left));
        left -= data.length;
        hash.update(data);
        if (!socket.write(data)) return socket.once('drain', pump);
      }
      socket.end(() => say({ event: 'sent', bytes: options.sendBytes, sha256: hash.digest('hex'),
        ms: Number(process.hrtime.bigint() - started) / 1e6 }));
    };
    pump();
  }).listen(options.sendPort, options.host));
}
if (options.receivePort) {
  servers.push(createServer((socket) => {
    const hash = createHash('sha256');
    let bytes = 0;
    let first;
    let last;
    let reported = false;
    const report = () => {
      if (reported) return;
      reported = true;
      say({ event: 'received', bytes, sha256: hash.digest('hex'),
        ms: first === undefined ? 0 : Number(last - first) / 1e6 });
    };
    socket.on('data', (data) => {
      first ??= process.hrtime.bigint();
      last = process.hrtime.bigint();
      bytes += data.length;
      hash.update(data);
      if (options.receiveBytes && bytes >= options.receiveBytes) { report(); socket.end(); }
    });
    socket.on('end', () => { report(); socket.end(); });
    socket.on('error', (error) => say({ event: 'error', port: options.receivePort, message: error.message }));
  }).listen(options.receivePort, options.host));
}
let listening = 0;
for (const server of servers) server.on('listening', () => { if (++listening === servers.length) say({ event: 'ready' }); });
`;

/** Options of {@link startTcpPeer}. */
export interface TcpPeerOptions {
  /** Namespace to run in. */
  readonly netns: string;
  /** Address to listen on (the TAP's host-side address). */
  readonly host: string;
  /** Port that sends `sendBytes` to each connection. */
  readonly sendPort?: number;
  readonly sendBytes?: number;
  /** Port that receives; the peer closes after `receiveBytes` (if given) or at the guest's EOF. */
  readonly receivePort?: number;
  readonly receiveBytes?: number;
}

/** What the peer reported about one connection. */
export interface TransferReport {
  readonly event: 'sent' | 'received';
  readonly bytes: number;
  readonly sha256: string;
  /** Sender: from connection to last write flushed; receiver: first to last byte. */
  readonly ms: number;
}

/** A running peer. */
export class TcpPeer {
  private constructor(readonly process: ManagedProcess) {}

  /** Starts the peer and waits until it listens. */
  static async start(options: TcpPeerOptions): Promise<TcpPeer> {
    const proc = ManagedProcess.start({
      label: 'tcp peer',
      command: process.execPath,
      args: [
        '--input-type=module',
        '-e',
        PEER_PROGRAM,
        JSON.stringify({
          host: options.host,
          sendPort: options.sendPort,
          sendBytes: options.sendBytes,
          receivePort: options.receivePort,
          receiveBytes: options.receiveBytes,
        }),
      ],
      netns: options.netns,
      stdin: 'ignore',
    });
    await proc.waitFor('{"event":"ready"}', { timeoutMs: 10_000 });
    return new TcpPeer(proc);
  }

  /** Reports so far, in order. */
  reports(): TransferReport[] {
    return this.process.output
      .split('\n')
      .filter(
        (line) => line.startsWith('{"event":"sent"') || line.startsWith('{"event":"received"'),
      )
      .map((line) => JSON.parse(line) as TransferReport);
  }

  /** Errors the peer reported (connection resets...). */
  errors(): string[] {
    return this.process.output
      .split('\n')
      .filter((line) => line.startsWith('{"event":"error"'))
      .map((line) => (JSON.parse(line) as { message: string }).message);
  }

  /** Waits for the `count`-th report of `event`. */
  async next(
    event: 'sent' | 'received',
    count: number,
    timeoutMs: number,
  ): Promise<TransferReport> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.reports().filter((report) => report.event === event);
      if (found.length >= count) return found[count - 1]!;
      if (!this.process.running || Date.now() > deadline) {
        throw new E2eError(
          this.process.running ? 'TIMEOUT' : 'PROCESS_EXITED',
          `tcp peer: no ${event} report #${count}:\n${outputTail(this.process.output)}`,
        );
      }
      await new Promise((wake) => setTimeout(wake, 50));
    }
  }

  async stop(): Promise<void> {
    await this.process.stop({ graceMs: 1000 });
  }
}
