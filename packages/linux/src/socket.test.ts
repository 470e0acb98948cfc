import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SHUT_WR } from './constants.js';
import { drainEventfd, eventfd, signalEventfd } from './eventfd.js';
import { close, ftruncate, pwrite } from './files.js';
import { memfdCreate, mmap } from './mmap.js';
import {
  accept,
  connectUnix,
  listenUnix,
  recvmsg,
  sendmsg,
  shutdown,
  socketpair,
  unixSocket,
} from './socket.js';
import { waitReadable } from './watch.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'virtkit-sock-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const text = (bytes: Uint8Array, length: number) =>
  Buffer.from(bytes.subarray(0, length)).toString();

describe('sendmsg/recvmsg with SCM_RIGHTS', () => {
  it('passes an eventfd and a memfd that work on the receiving side', () => {
    const [a, b] = socketpair();
    const kick = eventfd();
    const memory = memfdCreate('shared-ram');
    ftruncate(memory, 4096);
    pwrite(memory, Buffer.from('guest ram'), 0);
    try {
      expect(sendmsg(a, Buffer.from('SET_MEM_TABLE'), [kick, memory])).toBe(13);
      const buffer = new Uint8Array(64);
      const message = recvmsg(b, buffer);
      expect(message).not.toBeNull();
      const { bytes, fds, controlTruncated } = message!;
      expect(text(buffer, bytes)).toBe('SET_MEM_TABLE');
      expect(controlTruncated).toBe(false);
      expect(fds).toHaveLength(2);
      const [receivedKick, receivedMemory] = fds as [number, number];
      // New descriptor numbers, same open files.
      expect(receivedKick).not.toBe(kick);
      signalEventfd(receivedKick, 5);
      expect(drainEventfd(kick)).toBe(5);
      const mapping = mmap({ fd: receivedMemory, length: 4096 });
      expect(text(new Uint8Array(mapping.buffer), 9)).toBe('guest ram');
      mapping.unmap();
      close(receivedKick);
      close(receivedMemory);
    } finally {
      for (const fd of [a, b, kick, memory]) close(fd);
    }
  });

  it('gathers and scatters data, and passes no descriptors when none are sent', () => {
    const [a, b] = socketpair();
    try {
      expect(sendmsg(a, [Buffer.from('head'), Buffer.from('-'), Buffer.from('body')])).toBe(9);
      const head = new Uint8Array(4);
      const rest = new Uint8Array(16);
      const message = recvmsg(b, [head, rest]);
      expect(message).toEqual({ bytes: 9, fds: [], controlTruncated: false });
      expect(text(head, 4)).toBe('head');
      expect(text(rest, 5)).toBe('-body');
    } finally {
      close(a);
      close(b);
    }
  });

  it('returns null on an empty non-blocking socket and reports EOF as 0 bytes', () => {
    const [a, b] = socketpair({ nonBlocking: true });
    try {
      expect(recvmsg(b, new Uint8Array(8))).toBeNull();
      shutdown(a, SHUT_WR);
      expect(recvmsg(b, new Uint8Array(8))).toEqual({ bytes: 0, fds: [], controlTruncated: false });
    } finally {
      close(a);
      close(b);
    }
    expect(() => sendmsg(a, Buffer.from('x'))).toThrow(
      expect.objectContaining({ code: 'EBADF', syscall: 'sendmsg' }),
    );
  });

  it('fails with EPIPE, not SIGPIPE, when the peer is gone', () => {
    const [a, b] = socketpair();
    close(b);
    try {
      expect(() => sendmsg(a, Buffer.from('x'))).toThrow(
        expect.objectContaining({ code: 'EPIPE' }),
      );
    } finally {
      close(a);
    }
  });

  it('refuses more descriptors than one message carries', () => {
    const [a, b] = socketpair();
    try {
      expect(() => sendmsg(a, Buffer.from('x'), new Array(254).fill(a))).toThrow(
        expect.objectContaining({ code: 'EINVAL' }),
      );
    } finally {
      close(a);
      close(b);
    }
  });
});

describe('Unix socket server and client', () => {
  it('accepts on the event loop and exchanges a descriptor over a socket path', async () => {
    const path = join(dir, 'vhost.sock');
    const server = listenUnix(path, { nonBlocking: true });
    expect(statSync(path).isSocket()).toBe(true);
    expect(accept(server)).toBeNull(); // nobody yet
    const client = unixSocket();
    let connection = -1;
    try {
      const accepted = waitReadable(server);
      connectUnix(client, path);
      await accepted;
      connection = accept(server, { nonBlocking: true })!;
      expect(connection).toBeGreaterThan(0);

      const kick = eventfd();
      const replied = waitReadable(connection);
      sendmsg(client, Buffer.from('hello'), [kick]);
      await replied;
      const buffer = new Uint8Array(16);
      const message = recvmsg(connection, buffer)!;
      expect(text(buffer, message.bytes)).toBe('hello');
      signalEventfd(message.fds[0]!);
      expect(drainEventfd(kick)).toBe(1);
      close(message.fds[0]!);
      close(kick);
    } finally {
      if (connection >= 0) close(connection);
      close(client);
      close(server);
    }
    const late = unixSocket();
    try {
      expect(() => connectUnix(late, join(dir, 'nobody.sock'))).toThrow(
        expect.objectContaining({ code: 'ENOENT', path: join(dir, 'nobody.sock') }),
      );
    } finally {
      close(late);
    }
  });

  it('supports abstract socket names and rejects over-long paths', () => {
    const name = `\0virtkit-test-${process.pid}`;
    const server = listenUnix(name);
    const client = unixSocket();
    try {
      connectUnix(client, name);
      const connection = accept(server)!;
      sendmsg(connection, Buffer.from('ok'));
      const buffer = new Uint8Array(2);
      expect(recvmsg(client, buffer)?.bytes).toBe(2);
      close(connection);
    } finally {
      close(client);
      close(server);
    }
    expect(() => listenUnix(join(dir, 'x'.repeat(120)))).toThrow(
      expect.objectContaining({ code: 'EINVAL', syscall: 'bind' }),
    );
    expect(() => listenUnix(join(dir, 'missing-dir', 's.sock'))).toThrow(
      expect.objectContaining({ code: 'ENOENT', syscall: 'bind' }),
    );
  });
});
