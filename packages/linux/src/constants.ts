/**
 * Linux x86_64 ABI constants, transcribed from the kernel's uapi headers (the header of each
 * group is named). Values differ on other architectures, which is one reason this package runs
 * on x86_64 only.
 */

// <asm-generic/fcntl.h> as used by x86_64 (octal as in the header).
/** Open for reading only. */
export const O_RDONLY = 0o0;
/** Open for writing only. */
export const O_WRONLY = 0o1;
/** Open for reading and writing. */
export const O_RDWR = 0o2;
/** Create the file if it does not exist (takes `mode`). */
export const O_CREAT = 0o100;
/** With `O_CREAT`: fail with `EEXIST` if the file exists. */
export const O_EXCL = 0o200;
/** Do not make a terminal the controlling terminal. */
export const O_NOCTTY = 0o400;
/** Truncate a regular file to length 0. */
export const O_TRUNC = 0o1000;
/** Every write appends. */
export const O_APPEND = 0o2000;
/** Non-blocking I/O: calls that would block fail with `EAGAIN` instead. */
export const O_NONBLOCK = 0o4000;
/** Writes complete as if followed by `fdatasync`. */
export const O_DSYNC = 0o10000;
/** Bypass the page cache. Buffers, offsets and lengths must be aligned (see `alignedBuffer`). */
export const O_DIRECT = 0o40000;
/** Fail unless the path is a directory. */
export const O_DIRECTORY = 0o200000;
/** Do not follow a symbolic link in the last path component. */
export const O_NOFOLLOW = 0o400000;
/** Close the descriptor on `execve` (always wanted in a VMM that spawns helpers). */
export const O_CLOEXEC = 0o2000000;
/** Writes complete as if followed by `fsync`. */
export const O_SYNC = 0o4010000;

// <linux/fs.h>
/** `preadv2`/`pwritev2`: fail with `EAGAIN` instead of waiting (for I/O, locks, allocation). */
export const RWF_NOWAIT = 0x08;

// <linux/magic.h>
/** `statfs` type of tmpfs (and of `/dev/shm`, and of memfd files). */
export const TMPFS_MAGIC = 0x01021994;
/** `statfs` type of ramfs. */
export const RAMFS_MAGIC = 0x858458f6;

// <linux/falloc.h>
/** `fallocate`: do not change the file size. */
export const FALLOC_FL_KEEP_SIZE = 0x01;
/** `fallocate`: deallocate the range (must be combined with `FALLOC_FL_KEEP_SIZE`). */
export const FALLOC_FL_PUNCH_HOLE = 0x02;
/** `fallocate`: make the range read as zeroes, preferably without writing data. */
export const FALLOC_FL_ZERO_RANGE = 0x10;

// <linux/stat.h>
/** Mask of the file type bits in `st_mode`. */
export const S_IFMT = 0o170000;
/** Regular file. */
export const S_IFREG = 0o100000;
/** Block device. */
export const S_IFBLK = 0o60000;
/** Character device. */
export const S_IFCHR = 0o20000;
/** Socket. */
export const S_IFSOCK = 0o140000;

// <linux/eventfd.h>
/** `eventfd`: semaphore semantics (each read returns 1). */
export const EFD_SEMAPHORE = 0x1;
/** `eventfd`: non-blocking. */
export const EFD_NONBLOCK = O_NONBLOCK;
/** `eventfd`: close on exec. */
export const EFD_CLOEXEC = O_CLOEXEC;

// <linux/eventpoll.h>
/** `epoll_create1`: close on exec. */
export const EPOLL_CLOEXEC = O_CLOEXEC;
/** Readable. */
export const EPOLLIN = 0x001;
/** Urgent data. */
export const EPOLLPRI = 0x002;
/** Writable. */
export const EPOLLOUT = 0x004;
/** Error condition (always reported). */
export const EPOLLERR = 0x008;
/** Hang-up (always reported). */
export const EPOLLHUP = 0x010;
/** Peer closed its writing half. */
export const EPOLLRDHUP = 0x2000;
/** Wake only one of several epoll instances waiting on the same file. */
export const EPOLLEXCLUSIVE = 1 << 28;
/** Report readiness once, then disable until re-armed with `modify`. */
export const EPOLLONESHOT = 1 << 30;
/** Edge-triggered. */
export const EPOLLET = 0x80000000;

// <linux/memfd.h>
/** `memfd_create`: close on exec. */
export const MFD_CLOEXEC = 0x1;
/** `memfd_create`: allow `F_ADD_SEALS`. */
export const MFD_ALLOW_SEALING = 0x2;
/** `memfd_create`: back with huge pages. */
export const MFD_HUGETLB = 0x4;

// <asm-generic/mman-common.h>, <linux/mman.h>
/** Pages may be read. */
export const PROT_READ = 0x1;
/** Pages may be written. */
export const PROT_WRITE = 0x2;
/** Pages may be executed. */
export const PROT_EXEC = 0x4;
/** Pages may not be accessed. */
export const PROT_NONE = 0x0;
/** Share the mapping with every other mapping of the object (and other processes). */
export const MAP_SHARED = 0x01;
/** Copy-on-write private mapping. */
export const MAP_PRIVATE = 0x02;
/** Place the mapping exactly at `address`, replacing what is there. */
export const MAP_FIXED = 0x10;
/** Not backed by a file (`fd` is ignored). */
export const MAP_ANONYMOUS = 0x20;
/** Do not reserve swap space. */
export const MAP_NORESERVE = 0x4000;
/** Prefault the pages now. */
export const MAP_POPULATE = 0x8000;
/** Use huge pages. */
export const MAP_HUGETLB = 0x40000;
/** `msync`: schedule the write-back and return. */
export const MS_ASYNC = 1;
/** `msync`: invalidate other mappings of the same file. */
export const MS_INVALIDATE = 2;
/** `msync`: write back and wait. */
export const MS_SYNC = 4;

// <linux/socket.h>, <asm-generic/socket.h>
/** Unix domain socket family. */
export const AF_UNIX = 1;
/** Stream socket. */
export const SOCK_STREAM = 1;
/** Datagram socket. */
export const SOCK_DGRAM = 2;
/** Sequenced-packet socket (message boundaries, connection oriented). */
export const SOCK_SEQPACKET = 5;
/** `socket` type flag: non-blocking. */
export const SOCK_NONBLOCK = O_NONBLOCK;
/** `socket` type flag: close on exec. */
export const SOCK_CLOEXEC = O_CLOEXEC;
/** Socket-level options and control messages. */
export const SOL_SOCKET = 1;
/** Control message carrying file descriptors. */
export const SCM_RIGHTS = 1;
/** `recvmsg` flag set when control data (e.g. passed fds) did not fit and was dropped. */
export const MSG_CTRUNC = 0x8;
/** Do not block for this call only. */
export const MSG_DONTWAIT = 0x40;
/** Do not raise SIGPIPE when the peer is gone; fail with `EPIPE`. */
export const MSG_NOSIGNAL = 0x4000;
/** `recvmsg`: received descriptors are close-on-exec. */
export const MSG_CMSG_CLOEXEC = 0x40000000;
/** `shutdown`: no more receptions. */
export const SHUT_RD = 0;
/** `shutdown`: no more transmissions. */
export const SHUT_WR = 1;
/** `shutdown`: both. */
export const SHUT_RDWR = 2;
/** Most descriptors one `SCM_RIGHTS` message can carry (`SCM_MAX_FD`). */
export const SCM_MAX_FD = 253;

// <linux/if_tun.h>, <linux/if.h>
/** TUN device (IP packets). */
export const IFF_TUN = 0x0001;
/** TAP device (Ethernet frames). */
export const IFF_TAP = 0x0002;
/** Several queues (file descriptors) on one interface. */
export const IFF_MULTI_QUEUE = 0x0100;
/** `TUNSETQUEUE`: attach this queue. */
export const IFF_ATTACH_QUEUE = 0x0200;
/** `TUNSETQUEUE`: detach this queue. */
export const IFF_DETACH_QUEUE = 0x0400;
/** No packet-information prefix. */
export const IFF_NO_PI = 0x1000;
/** Each frame is prefixed with a `virtio_net_hdr`. */
export const IFF_VNET_HDR = 0x4000;
/** Fail if the interface already exists. */
export const IFF_TUN_EXCL = 0x8000;
/** Interface is up (`SIOCGIFFLAGS`). */
export const IFF_UP = 0x1;
/** `TUNSETOFFLOAD`: the guest handles partial checksums. */
export const TUN_F_CSUM = 0x01;
/** `TUNSETOFFLOAD`: TCP segmentation offload over IPv4. */
export const TUN_F_TSO4 = 0x02;
/** `TUNSETOFFLOAD`: TCP segmentation offload over IPv6. */
export const TUN_F_TSO6 = 0x04;
/** `TUNSETOFFLOAD`: TSO with ECN bits. */
export const TUN_F_TSO_ECN = 0x08;
/** `TUNSETOFFLOAD`: UDP fragmentation offload (accepted, ignored by kernels since 4.14). */
export const TUN_F_UFO = 0x10;
/** `TUNSETOFFLOAD`: UDP segmentation offload over IPv4 (kernel 6.2+, with `TUN_F_USO6`). */
export const TUN_F_USO4 = 0x20;
/** `TUNSETOFFLOAD`: UDP segmentation offload over IPv6 (kernel 6.2+, with `TUN_F_USO4`). */
export const TUN_F_USO6 = 0x40;
/** Longest interface name, including the terminating NUL. */
export const IFNAMSIZ = 16;

// ioctl request numbers: _IOW/_IOR('T', n, int) from <linux/if_tun.h>, 0x12 ones from <linux/fs.h>.
/** `_IOW('T', 202, int)`: create or attach a TUN/TAP interface. */
export const TUNSETIFF = 0x400454ca;
/** `_IOR('T', 207, unsigned int)`: the `IFF_*` flags the driver supports. */
export const TUNGETFEATURES = 0x800454cf;
/** `_IOW('T', 208, unsigned int)`: set `TUN_F_*` offloads (argument passed by value). */
export const TUNSETOFFLOAD = 0x400454d0;
/** `_IOR('T', 210, unsigned int)`: read back the interface name and flags. */
export const TUNGETIFF = 0x800454d2;
/** `_IOR('T', 215, int)`: read the vnet header size. */
export const TUNGETVNETHDRSZ = 0x800454d7;
/** `_IOW('T', 216, int)`: set the vnet header size (10, or 12 with `num_buffers`). */
export const TUNSETVNETHDRSZ = 0x400454d8;
/** `_IOW('T', 217, int)`: attach or detach a multi-queue queue. */
export const TUNSETQUEUE = 0x400454d9;
/** `_IO(0x12, 104)`: logical sector size of a block device. */
export const BLKSSZGET = 0x1268;
/** `_IO(0x12, 119)`: discard a byte range of a block device. */
export const BLKDISCARD = 0x1277;
/** `_IOR(0x12, 114, size_t)`: size of a block device in bytes. */
export const BLKGETSIZE64 = 0x80081272;

// <asm-generic/fcntl.h>
/** `fcntl`: get file status flags. */
export const F_GETFL = 3;
/** `fcntl`: set file status flags. */
export const F_SETFL = 4;
