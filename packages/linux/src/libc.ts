/**
 * The C library bindings, through koffi. Internal: the rest of the package wraps these calls
 * with errno handling and typed arguments.
 *
 * Pointer arguments take a typed array or DataView (koffi passes the address of its bytes, no
 * copy), a number (a raw address; x86_64 user addresses are below 2^47, exact as numbers) or
 * `null`. Pointer results are declared as `intptr_t` so they come back as numbers too.
 */

import koffi, { type LibraryHandle } from 'koffi';
import { LinuxError } from './errors.js';

/** Something koffi accepts for a `void *` argument. */
export type Pointer = ArrayBufferView | number | null;

/** Callback of a koffi `.async` call: runs on the event loop once the call returned. */
export type AsyncCallback = (error: unknown, result: number) => void;

/** A bound C function with koffi's thread-pool variant. */
type Bound<Args extends unknown[]> = ((...args: Args) => number) & {
  async: (...args: [...Args, AsyncCallback]) => void;
};

/** The C functions this package calls. Results are the raw C results (-1 and errno on error). */
export interface Libc {
  open: Bound<[path: string, flags: number, mode: number]>;
  close: Bound<[fd: number]>;
  read: Bound<[fd: number, buffer: Pointer, length: number]>;
  write: Bound<[fd: number, buffer: Pointer, length: number]>;
  pread: Bound<[fd: number, buffer: Pointer, length: number, offset: number]>;
  pwrite: Bound<[fd: number, buffer: Pointer, length: number, offset: number]>;
  readv: Bound<[fd: number, iov: Pointer, count: number]>;
  writev: Bound<[fd: number, iov: Pointer, count: number]>;
  preadv: Bound<[fd: number, iov: Pointer, count: number, offset: number]>;
  pwritev: Bound<[fd: number, iov: Pointer, count: number, offset: number]>;
  preadv2: Bound<[fd: number, iov: Pointer, count: number, offset: number, flags: number]>;
  pwritev2: Bound<[fd: number, iov: Pointer, count: number, offset: number, flags: number]>;
  fsync: Bound<[fd: number]>;
  fdatasync: Bound<[fd: number]>;
  fallocate: Bound<[fd: number, mode: number, offset: number, length: number]>;
  ftruncate: Bound<[fd: number, length: number]>;
  fstat: Bound<[fd: number, stat: Pointer]>;
  fstatfs: Bound<[fd: number, stat: Pointer]>;
  fcntl: Bound<[fd: number, command: number, argument: number]>;
  ioctl: Bound<[fd: number, request: number, argument: Pointer]>;
  eventfd: Bound<[initial: number, flags: number]>;
  timerfd_create: Bound<[clock: number, flags: number]>;
  timerfd_settime: Bound<[fd: number, flags: number, value: Pointer, old: Pointer]>;
  epoll_create1: Bound<[flags: number]>;
  epoll_ctl: Bound<[epfd: number, operation: number, fd: number, event: Pointer]>;
  epoll_wait: Bound<[epfd: number, events: Pointer, maxEvents: number, timeout: number]>;
  memfd_create: Bound<[name: string, flags: number]>;
  mmap: Bound<
    [address: number, length: number, protection: number, flags: number, fd: number, offset: number]
  >;
  munmap: Bound<[address: number, length: number]>;
  msync: Bound<[address: number, length: number, flags: number]>;
  socket: Bound<[domain: number, type: number, protocol: number]>;
  socketpair: Bound<[domain: number, type: number, protocol: number, fds: Pointer]>;
  bind: Bound<[fd: number, address: Pointer, length: number]>;
  listen: Bound<[fd: number, backlog: number]>;
  accept4: Bound<[fd: number, address: Pointer, length: Pointer, flags: number]>;
  connect: Bound<[fd: number, address: Pointer, length: number]>;
  shutdown: Bound<[fd: number, how: number]>;
  sendmsg: Bound<[fd: number, message: Pointer, flags: number]>;
  recvmsg: Bound<[fd: number, message: Pointer, flags: number]>;
}

/** True on the one platform this package supports: Linux on x86_64. */
export function isSupportedPlatform(): boolean {
  return process.platform === 'linux' && process.arch === 'x64';
}

let bound: Libc | undefined;

/** The libc bindings, loaded on first use (so importing the package never fails by itself). */
export function libc(): Libc {
  return bound ?? load();
}

/** The errno of the last failed call on this thread (koffi saves it right after the call). */
export function lastErrno(): number {
  return koffi.errno();
}

/**
 * koffi keeps the memory of 8 asynchronous calls (`.async`) ready and allocates it for every
 * call beyond that, which made 32 calls in flight six times slower than Node's own thread pool
 * (4 KiB random reads from the page cache: 38k against 253k requests/s). With the maximum of 32
 * resident pools (256 KiB of address space each) they match it (261k). koffi accepts settings
 * only before its first library is loaded; if someone else loaded one first, the defaults stay.
 */
function keepAsyncPoolsResident(): void {
  try {
    koffi.config({ ...koffi.config(), resident_async_pools: 32 });
  } catch {
    // Already configured and loaded elsewhere in this process.
  }
}

function load(): Libc {
  if (!isSupportedPlatform()) {
    // ENOSYS: "function not implemented" is what this host gets from us.
    throw new LinuxError(38, 'load', {
      detail: `@virtkit/linux supports Linux on x86_64 only, not ${process.platform} ${process.arch}`,
    });
  }
  keepAsyncPoolsResident();
  const lib = koffi.load('libc.so.6');
  const f = (declaration: string) => lib.func(declaration);
  bound = {
    // open, fcntl and ioctl are variadic in C. Declaring their one used extra argument is safe on
    // x86_64 SysV (variadic and fixed arguments travel in the same registers) and keeps koffi on
    // its fast non-variadic path.
    open: f('int open(const char *path, int flags, uint32_t mode)'),
    close: f('int close(int fd)'),
    read: f('long read(int fd, void *buf, size_t count)'),
    write: f('long write(int fd, const void *buf, size_t count)'),
    pread: f('long pread(int fd, void *buf, size_t count, int64_t offset)'),
    pwrite: f('long pwrite(int fd, const void *buf, size_t count, int64_t offset)'),
    readv: f('long readv(int fd, const void *iov, int iovcnt)'),
    writev: f('long writev(int fd, const void *iov, int iovcnt)'),
    preadv: f('long preadv(int fd, const void *iov, int iovcnt, int64_t offset)'),
    pwritev: f('long pwritev(int fd, const void *iov, int iovcnt, int64_t offset)'),
    preadv2: f('long preadv2(int fd, const void *iov, int iovcnt, int64_t offset, int flags)'),
    pwritev2: f('long pwritev2(int fd, const void *iov, int iovcnt, int64_t offset, int flags)'),
    fsync: f('int fsync(int fd)'),
    fdatasync: f('int fdatasync(int fd)'),
    fallocate: f('int fallocate(int fd, int mode, int64_t offset, int64_t len)'),
    ftruncate: f('int ftruncate(int fd, int64_t length)'),
    fstat: bindFstat(lib),
    fstatfs: f('int fstatfs(int fd, void *buf)'),
    fcntl: f('int fcntl(int fd, int cmd, long arg)'),
    ioctl: f('int ioctl(int fd, unsigned long request, void *arg)'),
    eventfd: f('int eventfd(unsigned int initval, int flags)'),
    timerfd_create: f('int timerfd_create(int clockid, int flags)'),
    timerfd_settime: f(
      'int timerfd_settime(int fd, int flags, const void *new_value, void *old_value)',
    ),
    epoll_create1: f('int epoll_create1(int flags)'),
    epoll_ctl: f('int epoll_ctl(int epfd, int op, int fd, void *event)'),
    epoll_wait: f('int epoll_wait(int epfd, void *events, int maxevents, int timeout)'),
    memfd_create: f('int memfd_create(const char *name, unsigned int flags)'),
    mmap: f(
      'intptr_t mmap(uintptr_t addr, size_t length, int prot, int flags, int fd, int64_t off)',
    ),
    munmap: f('int munmap(uintptr_t addr, size_t length)'),
    msync: f('int msync(uintptr_t addr, size_t length, int flags)'),
    socket: f('int socket(int domain, int type, int protocol)'),
    socketpair: f('int socketpair(int domain, int type, int protocol, int *sv)'),
    bind: f('int bind(int fd, const void *addr, uint32_t addrlen)'),
    listen: f('int listen(int fd, int backlog)'),
    accept4: f('int accept4(int fd, void *addr, void *addrlen, int flags)'),
    connect: f('int connect(int fd, const void *addr, uint32_t addrlen)'),
    shutdown: f('int shutdown(int fd, int how)'),
    sendmsg: f('long sendmsg(int fd, const void *msg, int flags)'),
    recvmsg: f('long recvmsg(int fd, void *msg, int flags)'),
  } as unknown as Libc;
  return bound;
}

/** glibc 2.33+ exports `fstat`; older ones only `__fxstat(_STAT_VER = 1, fd, buf)`. */
function bindFstat(lib: LibraryHandle): unknown {
  try {
    return lib.func('int fstat(int fd, void *statbuf)');
  } catch {
    const fxstat = lib.func('int __fxstat(int ver, int fd, void *statbuf)');
    const fstat = (fd: number, buffer: Pointer) => fxstat(1, fd, buffer) as number;
    return Object.assign(fstat, {
      async: (fd: number, buffer: Pointer, callback: AsyncCallback) =>
        fxstat.async(1, fd, buffer, callback),
    });
  }
}
