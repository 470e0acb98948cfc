import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ConsoleConfig } from '../constants.js';
import { ConsoleDevice } from '../device.js';
import { GuestConsole, tick, until } from '../test-support.js';
import { StdioBackend, type TerminalInput, type TerminalOutput } from './stdio.js';

/** A PassThrough dressed as a terminal's stdin (records raw-mode changes). */
function fakeStdin(isTTY = true) {
  const modes: boolean[] = [];
  const stream = new PassThrough() as PassThrough & { isTTY: boolean; isRaw: boolean };
  Object.assign(stream, {
    isTTY,
    isRaw: false,
    setRawMode(mode: boolean) {
      modes.push(mode);
      stream.isRaw = mode;
      return stream;
    },
  });
  return { stream: stream as TerminalInput & PassThrough, modes };
}

/** A PassThrough dressed as a terminal's stdout with a size. */
function fakeStdout(columns = 80, rows = 24) {
  const stream = new PassThrough() as PassThrough & { columns: number; rows: number };
  Object.assign(stream, { isTTY: true, columns, rows });
  return stream as TerminalOutput & PassThrough & { columns: number; rows: number };
}

describe('StdioBackend', () => {
  it('puts a terminal into raw mode while attached and restores it on close', async () => {
    const stdin = fakeStdin();
    const exitListeners = process.listenerCount('exit');
    const backend = new StdioBackend({ stdin: stdin.stream, stdout: fakeStdout() });
    const device = new ConsoleDevice({ backend });
    expect(stdin.modes).toEqual([true]);
    expect(backend.rawMode).toBe(true);
    expect(process.listenerCount('exit')).toBe(exitListeners + 1); // restores at exit too
    await device.close();
    expect(stdin.modes).toEqual([true, false]);
    expect(process.listenerCount('exit')).toBe(exitListeners);
    expect(stdin.stream.destroyed).toBe(false); // the process's streams are never ended
  });

  it('leaves a terminal that was already raw raw', async () => {
    const stdin = fakeStdin();
    stdin.stream.setRawMode?.(true);
    const backend = new StdioBackend({ stdin: stdin.stream, stdout: fakeStdout() });
    const device = new ConsoleDevice({ backend });
    await device.close();
    expect(stdin.modes).toEqual([true, true, true]);
  });

  it('reports the terminal size and follows SIGWINCH resizes', async () => {
    const stdout = fakeStdout(100, 30);
    const device = new ConsoleDevice({
      backend: new StdioBackend({ stdin: fakeStdin().stream, stdout }),
    });
    expect(device.port(0)!.size).toEqual({ cols: 100, rows: 30 });
    const guest = await GuestConsole.create(device);
    const before = guest.driver.interrupt.config;
    stdout.columns = 132;
    stdout.rows = 50;
    stdout.emit('resize');
    expect(device.config.getU16(ConsoleConfig.COLS)).toBe(132);
    expect(device.config.getU16(ConsoleConfig.ROWS)).toBe(50);
    expect(guest.driver.interrupt.config).toBe(before + 1);
    await device.close();
    stdout.emit('resize'); // after close: not listened to any more
  });

  it('turns Ctrl-C into SIGINT for the VMM in raw mode and passes the other keys on', async () => {
    const stdin = fakeStdin();
    const raised: string[] = [];
    const backend = new StdioBackend({
      stdin: stdin.stream,
      stdout: fakeStdout(),
      raise: (signal) => raised.push(signal),
    });
    const device = new ConsoleDevice({ backend });
    const guest = await GuestConsole.create(device);
    guest.postReceive(0, 1, 64);
    stdin.stream.write(Buffer.from('ab\u0003cd'));
    await until(() => device.port(0)!.stats.bytesToGuest === 4, 'the keys');
    expect(await guest.takeReceived(0)).toBe('abcd');
    expect(raised).toEqual(['SIGINT']);
    await device.close();
  });

  it('passes Ctrl-C to the guest with signals off, and on pipes', async () => {
    for (const options of [{ signals: false }, { tty: false }]) {
      const stdin = fakeStdin(options.tty ?? true);
      const raised: string[] = [];
      const backend = new StdioBackend({
        stdin: stdin.stream,
        stdout: fakeStdout(),
        raise: (signal) => raised.push(signal),
        ...(options.signals === false ? { signals: false } : {}),
      });
      const device = new ConsoleDevice({ backend });
      const guest = await GuestConsole.create(device);
      guest.postReceive(0, 1, 64);
      stdin.stream.write(Buffer.from('\u0003'));
      await until(() => device.port(0)!.stats.bytesToGuest === 1, 'the key');
      expect(await guest.takeReceived(0)).toBe('\u0003');
      expect(raised).toEqual([]);
      expect(stdin.modes).toEqual(options.tty === false ? [] : [true]);
      await device.close();
    }
  });

  it("writes to a terminal's descriptor off the event loop, so a terminal that stops reading cannot stall the VMM", async () => {
    // Node writes to a TTY synchronously on Linux: a terminal that stops reading (XOFF, a stalled
    // SSH session) would block the whole event loop inside process.stdout.write. A FIFO nobody
    // reads plays that terminal; the backend must write to its descriptor, never to the stream.
    const dir = mkdtempSync(join(tmpdir(), 'virtkit-stdio-'));
    const path = join(dir, 'terminal');
    execFileSync('mkfifo', [path]);
    const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const writer = openSync(path, constants.O_WRONLY);
    const stdout = Object.assign(fakeStdout(), { fd: writer });
    const device = new ConsoleDevice({
      backend: new StdioBackend({ stdin: fakeStdin().stream, stdout }),
    });
    const port = device.port(0)!;
    const guest = await GuestConsole.create(device);
    const chunk = 'x'.repeat(64 * 1024);
    const total = 16 * chunk.length; // 1 MiB against a 64 KiB pipe
    for (let i = 0; i < 16; i++) guest.postWrite(0, chunk);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    await new Promise((resolve) => setTimeout(resolve, 50));
    // The loop kept running, the port stopped taking output, and the guest's buffers wait.
    expect(ticks).toBeGreaterThan(5);
    expect(port.stats.bytesFromGuest).toBeLessThan(total);
    expect(guest.collectWritten(0).length).toBeLessThan(16);
    expect(stdout.readableLength).toBe(0); // nothing went through the (blocking) stream
    // The terminal reads again: every byte arrives, in order, and every buffer comes back.
    const received: Buffer[] = [];
    let length = 0;
    const buffer = Buffer.alloc(64 * 1024);
    while (length < total) {
      let count = 0;
      try {
        count = readSync(reader, buffer);
      } catch (error) {
        if ((error as { code?: string }).code !== 'EAGAIN') throw error;
      }
      if (count > 0) {
        received.push(Buffer.from(buffer.subarray(0, count)));
        length += count;
      } else {
        await tick();
      }
    }
    clearInterval(timer);
    expect(Buffer.concat(received).toString()).toBe(chunk.repeat(16));
    await until(() => port.stats.bytesFromGuest === total, 'all output taken');
    await device.close();
    closeSync(writer);
    closeSync(reader);
    rmSync(dir, { recursive: true, force: true });
  });

  it('closes without hanging on a terminal that does not read, and flushes one that does', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtkit-stdio-'));
    const path = join(dir, 'terminal');
    execFileSync('mkfifo', [path]);
    const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const writer = openSync(path, constants.O_WRONLY);
    /** Reads `bytes` from the terminal; resolves with the time of the first read. */
    const drain = async (bytes: number) => {
      const buffer = Buffer.alloc(16 * 1024);
      let first = 0;
      for (let got = 0; got < bytes; ) {
        try {
          got += readSync(reader, buffer);
          first ||= Date.now();
        } catch (error) {
          if ((error as { code?: string }).code !== 'EAGAIN') throw error;
        }
        await tick();
      }
      return first;
    };
    for (const reads of [false, true]) {
      const stdout = Object.assign(fakeStdout(), { fd: writer });
      const device = new ConsoleDevice({
        backend: new StdioBackend({ stdin: fakeStdin().stream, stdout }),
      });
      const guest = await GuestConsole.create(device);
      const output = 'y'.repeat(80 * 1024); // more than the pipe holds
      guest.postWrite(0, output);
      await until(() => device.port(0)!.stats.bytesFromGuest > 64 * 1024, 'output taken');
      const taken = device.port(0)!.stats.bytesFromGuest;
      const started = Date.now();
      let closedAt = 0;
      const closed = device.close().then(() => {
        closedAt = Date.now();
      });
      const firstRead = reads ? await drain(taken) : 0;
      await closed;
      const took = closedAt - started;
      if (reads) {
        // Closing waited for the queued output to reach the terminal, and no longer.
        expect(closedAt).toBeGreaterThanOrEqual(firstRead);
        expect(took).toBeLessThan(900);
      } else {
        expect(took).toBeGreaterThanOrEqual(900); // gave up after about a second
      }
      expect(took).toBeLessThan(3000);
      if (!reads) await drain(taken); // let the thread pool's write finish
    }
    closeSync(writer);
    closeSync(reader);
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes guest output to stdout', async () => {
    const stdout = fakeStdout();
    const device = new ConsoleDevice({
      backend: new StdioBackend({ stdin: fakeStdin().stream, stdout }),
    });
    const guest = await GuestConsole.create(device);
    await guest.write(0, '\u001b[1mbold\u001b[0m');
    expect(stdout.read()?.toString()).toBe('\u001b[1mbold\u001b[0m');
    await device.close();
  });
});
