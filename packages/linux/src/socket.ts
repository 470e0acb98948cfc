/**
 * Unix domain sockets with descriptor passing (`SCM_RIGHTS`): the transport of vhost-user,
 * which hands memory (memfds) and doorbells (eventfds) between processes. For waiting on a
 * non-blocking socket without blocking the event loop, see `FdWatcher` and `waitReadable`.
 */

import {
  AF_UNIX,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_NOSIGNAL,
  SCM_MAX_FD,
  SCM_RIGHTS,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOL_SOCKET,
} from './constants.js';
import { LinuxError } from './errors.js';
import { lastErrno, libc } from './libc.js';
import { addressOf, type IovecInput, iovecs, rawIovecs } from './memory.js';

const EINTR = 4;
const EAGAIN = 11;
const EINVAL = 22;
const ECONNABORTED = 103;
const TWO_32 = 0x1_0000_0000;

/** Socket options. */
export interface SocketOptions {
  /** `O_NONBLOCK` on the new descriptor(s) (default false). */
  readonly nonBlocking?: boolean;
  /** `SOCK_STREAM` (default), `SOCK_SEQPACKET` or `SOCK_DGRAM`. */
  readonly type?: number;
}

function socketType(options: SocketOptions): number {
  return (options.type ?? SOCK_STREAM) | SOCK_CLOEXEC | (options.nonBlocking ? SOCK_NONBLOCK : 0);
}

// struct sockaddr_un: sa_family_t (u16) then 108 bytes of path.
const SUN_PATH_MAX = 108;

/**
 * Encodes a socket path. A path starting with `'\0'` names an abstract socket (no file; its
 * length counts, no terminating NUL).
 */
function sockaddrUnix(path: string, syscall: string): { address: Uint8Array; length: number } {
  const bytes = Buffer.from(path, 'utf8');
  const abstract = bytes[0] === 0;
  if (bytes.length === 0 || bytes.length + (abstract ? 0 : 1) > SUN_PATH_MAX) {
    throw new LinuxError(EINVAL, syscall, {
      path,
      detail: `a Unix socket path must be 1 to ${SUN_PATH_MAX - 1} bytes`,
    });
  }
  const address = new Uint8Array(2 + SUN_PATH_MAX);
  address[0] = AF_UNIX; // little-endian u16
  address.set(bytes, 2);
  return { address, length: 2 + bytes.length + (abstract ? 0 : 1) };
}

/** Creates an `AF_UNIX` socket (close-on-exec) and returns its descriptor. */
export function unixSocket(options: SocketOptions = {}): number {
  const fd = libc().socket(AF_UNIX, socketType(options), 0);
  if (fd < 0) throw new LinuxError(lastErrno(), 'socket');
  return fd;
}

/**
 * Creates a connected pair of `AF_UNIX` sockets (close-on-exec), e.g. to hand one end to a
 * backend process or worker.
 */
export function socketpair(options: SocketOptions = {}): [number, number] {
  const fds = new Int32Array(2);
  if (libc().socketpair(AF_UNIX, socketType(options), 0, fds) < 0) {
    throw new LinuxError(lastErrno(), 'socketpair');
  }
  return [fds[0]!, fds[1]!];
}

/** Binds a socket to a filesystem path (which must not exist) or an abstract name. */
export function bindUnix(fd: number, path: string): void {
  const { address, length } = sockaddrUnix(path, 'bind');
  if (libc().bind(fd, address, length) < 0) throw new LinuxError(lastErrno(), 'bind', { path });
}

/** Marks a bound socket as accepting connections. */
export function listen(fd: number, backlog = 128): void {
  if (libc().listen(fd, backlog) < 0) throw new LinuxError(lastErrno(), 'listen');
}

/**
 * Creates a socket listening on `path`: `unixSocket` + `bindUnix` + `listen`. Use
 * `nonBlocking: true` with `waitReadable` or an `FdWatcher` to accept on the event loop.
 */
export function listenUnix(
  path: string,
  options: SocketOptions & { backlog?: number } = {},
): number {
  const fd = unixSocket(options);
  try {
    bindUnix(fd, path);
    listen(fd, options.backlog);
  } catch (error) {
    libc().close(fd);
    throw error;
  }
  return fd;
}

/**
 * Connects a socket to `path`. A Unix stream connect completes at once, or fails with
 * `EAGAIN` on a non-blocking socket when the listener's backlog is full.
 */
export function connectUnix(fd: number, path: string): void {
  const { address, length } = sockaddrUnix(path, 'connect');
  if (libc().connect(fd, address, length) < 0) {
    throw new LinuxError(lastErrno(), 'connect', { path });
  }
}

/**
 * Accepts a connection and returns its descriptor (close-on-exec), or `null` when the listening
 * socket is non-blocking and no connection is waiting.
 */
export function accept(fd: number, options: { nonBlocking?: boolean } = {}): number | null {
  const flags = SOCK_CLOEXEC | (options.nonBlocking ? SOCK_NONBLOCK : 0);
  const c = libc();
  for (;;) {
    const connection = c.accept4(fd, null, null, flags);
    if (connection >= 0) return connection;
    const errno = lastErrno();
    if (errno === EAGAIN) return null;
    // A connection reset before it was accepted is gone; look for the next one.
    if (errno !== EINTR && errno !== ECONNABORTED) throw new LinuxError(errno, 'accept4');
  }
}

/** Shuts down reading (`SHUT_RD`), writing (`SHUT_WR`) or both (`SHUT_RDWR`). */
export function shutdown(fd: number, how: number): void {
  if (libc().shutdown(fd, how) < 0) throw new LinuxError(lastErrno(), 'shutdown');
}

// struct msghdr (56 bytes on x86_64), then room for one cmsg of SCM_MAX_FD descriptors:
// CMSG_SPACE(253 * 4) = 16 + 1016 (payload rounded up to 8).
const MSGHDR_SIZE = 64;
const CMSG_HEADER = 16;
const CONTROL_SIZE = CMSG_HEADER + 1016;
const messageBuffer = new ArrayBuffer(MSGHDR_SIZE + CONTROL_SIZE);
const messageWords = new Uint32Array(messageBuffer);
const controlInts = new Int32Array(messageBuffer, MSGHDR_SIZE);
let messageAddress = 0; // resolved on first use, so importing the package stays side-effect free

function setU64(byteOffset: number, value: number): void {
  messageWords[byteOffset / 4] = value >>> 0;
  messageWords[byteOffset / 4 + 1] = Math.floor(value / TWO_32);
}

/** Fills the msghdr for `data`, with room for `controlLength` bytes of control data. */
function prepareMessage(data: ArrayBufferView | IovecInput, controlLength: number): void {
  if (messageAddress === 0) messageAddress = addressOf(new Uint8Array(messageBuffer));
  const list = iovecs(ArrayBuffer.isView(data) ? [data] : data);
  setU64(0, 0); // msg_name
  setU64(8, 0); // msg_namelen + padding
  setU64(16, addressOf(list[rawIovecs])); // msg_iov
  setU64(24, list.count); // msg_iovlen
  setU64(32, controlLength === 0 ? 0 : messageAddress + MSGHDR_SIZE); // msg_control
  setU64(40, controlLength); // msg_controllen
  setU64(48, 0); // msg_flags + padding
}

/**
 * Sends `data` (one view, several, or an `IovecList`) and, optionally, descriptors as an
 * `SCM_RIGHTS` control message. The receiver gets duplicates; close yours when no longer needed.
 * Returns the bytes sent (a stream socket may send fewer), or `null` when a non-blocking socket
 * is full. `SIGPIPE` is never raised: a vanished peer gives `EPIPE`.
 *
 * Descriptors travel with the first byte, so `data` must not be empty when `fds` is given.
 *
 * @example
 * ```ts
 * sendmsg(socket, header, [memfd, kickFd]);
 * ```
 */
export function sendmsg(
  fd: number,
  data: ArrayBufferView | IovecInput,
  fds: readonly number[] = [],
): number | null {
  if (fds.length > SCM_MAX_FD) {
    throw new LinuxError(EINVAL, 'sendmsg', {
      detail: `${fds.length} descriptors is more than one message carries (${SCM_MAX_FD})`,
    });
  }
  const payload = fds.length * 4;
  prepareMessage(data, fds.length === 0 ? 0 : CMSG_HEADER + ((payload + 7) & ~7));
  if (fds.length > 0) {
    // struct cmsghdr: size_t cmsg_len = CMSG_LEN(payload), int level, int type, then the fds.
    controlInts[0] = CMSG_HEADER + payload;
    controlInts[1] = 0;
    controlInts[2] = SOL_SOCKET;
    controlInts[3] = SCM_RIGHTS;
    for (let i = 0; i < fds.length; i++) controlInts[4 + i] = fds[i]!;
  }
  const c = libc();
  for (;;) {
    const sent = c.sendmsg(fd, messageWords, MSG_NOSIGNAL);
    if (sent >= 0) return sent;
    const errno = lastErrno();
    if (errno === EAGAIN) return null;
    if (errno !== EINTR) throw new LinuxError(errno, 'sendmsg');
  }
}

/** What {@link recvmsg} received. */
export interface ReceivedMessage {
  /** Bytes written into the buffers; 0 with no descriptors means the peer closed. */
  readonly bytes: number;
  /** Descriptors received (close-on-exec); the caller owns them and must close them. */
  readonly fds: number[];
  /**
   * True when more descriptors arrived than one message carries: the kernel closed the excess
   * (`MSG_CTRUNC`). A protocol error on the sender's side.
   */
  readonly controlTruncated: boolean;
}

/**
 * Receives into `buffer` (one view, several, or an `IovecList`) together with any descriptors
 * sent along. Returns `null` when a non-blocking socket has nothing to read.
 *
 * @example
 * ```ts
 * const message = recvmsg(socket, header);
 * if (message === null) return; // wait for readability
 * if (message.bytes === 0 && message.fds.length === 0) closeConnection();
 * ```
 */
export function recvmsg(fd: number, buffer: ArrayBufferView | IovecInput): ReceivedMessage | null {
  prepareMessage(buffer, CONTROL_SIZE);
  const c = libc();
  let received: number;
  for (;;) {
    received = c.recvmsg(fd, messageWords, MSG_CMSG_CLOEXEC);
    if (received >= 0) break;
    const errno = lastErrno();
    if (errno === EAGAIN) return null;
    if (errno !== EINTR) throw new LinuxError(errno, 'recvmsg');
  }
  const controlLength = messageWords[10]!; // msg_controllen, now what the kernel wrote
  const flags = messageWords[12]!; // msg_flags
  const fds: number[] = [];
  // Walk the cmsghdrs (each 8-aligned); only SOL_SOCKET/SCM_RIGHTS is expected on Unix sockets.
  let at = 0;
  while (at + CMSG_HEADER <= controlLength) {
    const length = controlInts[at / 4]!;
    if (length < CMSG_HEADER || at + length > controlLength) break;
    if (controlInts[at / 4 + 2] === SOL_SOCKET && controlInts[at / 4 + 3] === SCM_RIGHTS) {
      const count = (length - CMSG_HEADER) / 4;
      for (let i = 0; i < count; i++) fds.push(controlInts[(at + CMSG_HEADER) / 4 + i]!);
    }
    at += (length + 7) & ~7;
  }
  return { bytes: received, fds, controlTruncated: (flags & MSG_CTRUNC) !== 0 };
}
