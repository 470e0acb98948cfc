import { PassThrough, Readable, Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ConsoleDevice } from '../device.js';
import { TRANSMIT_CHUNK } from '../handler.js';
import { GuestConsole, tick, until } from '../test-support.js';
import { StreamBackend } from './stream.js';

/** A writable whose writes complete only when the test says so. */
function slowWritable(highWaterMark: number) {
  const chunks: Buffer[] = [];
  const waiting: (() => void)[] = [];
  let most = 0;
  const stream = new Writable({
    highWaterMark,
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      waiting.push(() => callback());
    },
  });
  const track = () => {
    most = Math.max(most, stream.writableLength);
  };
  const write = stream.write.bind(stream);
  stream.write = ((chunk: Buffer) => {
    const result = write(chunk);
    track();
    return result;
  }) as typeof stream.write;
  return {
    stream,
    chunks,
    /** Completes every write issued so far. */
    release() {
      for (const done of waiting.splice(0)) done();
    },
    get most() {
      return most;
    },
  };
}

describe('StreamBackend', () => {
  it('writes guest output to the stream and reads input only while the guest has buffers', async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    const device = new ConsoleDevice({ backend: new StreamBackend({ input, output }) });
    const guest = await GuestConsole.create(device);
    await guest.write(0, 'hello host');
    expect(output.read()?.toString()).toBe('hello host');
    input.write('first');
    await tick();
    expect(input.isPaused()).toBe(true); // no receive buffers: the stream is paused
    guest.postReceive(0, 1, 64);
    await until(() => device.port(0)!.stats.bytesToGuest === 5, 'input delivery');
    expect(await guest.takeReceived(0)).toBe('first');
    expect(input.isPaused()).toBe(false);
  });

  it('holds guest buffers while the stream is over its high-water mark and goes on at drain', async () => {
    const slow = slowWritable(16);
    const device = new ConsoleDevice({ backend: new StreamBackend({ output: slow.stream }) });
    const guest = await GuestConsole.create(device);
    const tokens = ['0123456789', 'abcdefghij', 'ABCDEFGHIJ'].map((t) => guest.postWrite(0, t));
    // 10 bytes: below the mark; 20: write() says false, so the third chain stays in the ring.
    expect(guest.collectWritten(0)).toEqual(tokens.slice(0, 2));
    const written: number[] = [];
    await until(() => {
      slow.release(); // the stream writes one chunk at a time; 'drain' comes when all are done
      written.push(...guest.collectWritten(0));
      return written.length === 1;
    }, 'the third chain after drain');
    expect(written).toEqual([tokens[2]]);
    slow.release();
    expect(Buffer.concat(slow.chunks).toString()).toBe('0123456789abcdefghijABCDEFGHIJ');
  });

  it('keeps the memory it holds for a slow stream bounded, whatever the guest writes', async () => {
    const slow = slowWritable(16 * 1024);
    const device = new ConsoleDevice({ backend: new StreamBackend({ output: slow.stream }) });
    const guest = await GuestConsole.create(device);
    const big = new Uint8Array(256 * 1024).fill(0x61);
    const token = guest.postWrite(0, big);
    for (let round = 0; round < 100 && !guest.collectWritten(0).includes(token); round++) {
      slow.release();
      await tick();
    }
    slow.release();
    expect(Buffer.concat(slow.chunks).length).toBe(big.length);
    expect(slow.most).toBeLessThanOrEqual(16 * 1024 + TRANSMIT_CHUNK);
  });

  it('echoes through one duplex stream', async () => {
    const device = new ConsoleDevice({ backend: new StreamBackend(new PassThrough()) });
    const guest = await GuestConsole.create(device);
    guest.postReceive(0, 1, 64);
    await guest.write(0, 'ping');
    await until(() => device.port(0)!.stats.bytesToGuest === 4, 'the echo');
    expect(await guest.takeReceived(0)).toBe('ping');
  });

  it('counts output as dropped once the output stream is closed', async () => {
    const output = new PassThrough();
    const device = new ConsoleDevice({ backend: new StreamBackend({ output }) });
    const guest = await GuestConsole.create(device);
    output.destroy();
    await until(() => !device.port(0)!.hostConnected, 'the port to see the close');
    await guest.write(0, 'lost');
    expect(device.port(0)!.stats.outputDropped).toBe(4);
  });

  it('drops output of an input-only stream and reports a given size', async () => {
    const backend = new StreamBackend({ input: Readable.from([]), size: { cols: 90, rows: 20 } });
    const device = new ConsoleDevice({ backend });
    expect(device.port(0)!.size).toEqual({ cols: 90, rows: 20 });
    backend.setSize({ cols: 91, rows: 21 });
    expect(device.config.getU16(0)).toBe(91);
    const guest = await GuestConsole.create(device);
    await guest.write(0, 'x');
    expect(device.port(0)!.stats.outputDropped).toBe(1);
  });

  it('ends the streams it owns on close and leaves the caller’s alone', async () => {
    const owned = new PassThrough();
    const backend = new StreamBackend({ output: owned, end: true });
    backend.attach(nullHost());
    await backend.close();
    expect(owned.writableEnded).toBe(true);
    const borrowed = new PassThrough();
    const other = new StreamBackend({ output: borrowed });
    other.attach(nullHost());
    await other.close();
    expect(borrowed.writableEnded).toBe(false);
    expect(other.write(Uint8Array.of(1))).toBe('dropped');
  });
});

function nullHost() {
  return { input() {}, setConnected() {}, drained() {}, resize() {}, log() {} };
}
