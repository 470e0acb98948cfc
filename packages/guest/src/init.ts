/**
 * The `/init` program of a Virtkit guest initramfs: a busybox shell script that mounts the
 * pseudo-filesystems, loads the virtio modules in order, prints a ready marker and then opens a
 * shell, runs `/test.sh`, or runs a short device demo, chosen at build time or on the kernel
 * command line.
 */

/** What the guest does once its devices are up. */
export type GuestMode = 'shell' | 'script' | 'demo';

/** What the guest does when the shell, script or demo ends. */
export type GuestExitAction = 'reboot' | 'poweroff' | 'shell';

/** Every {@link GuestMode}, for validation. */
export const GUEST_MODES: readonly GuestMode[] = ['shell', 'script', 'demo'];

/** Every {@link GuestExitAction}, for validation. */
export const GUEST_EXIT_ACTIONS: readonly GuestExitAction[] = ['reboot', 'poweroff', 'shell'];

/** Printed on a line of its own once modules are loaded, before the mode starts. */
export const GUEST_READY_MARKER = 'VIRTKIT-GUEST-READY';

/** Printed as `VIRTKIT-EXIT <code>` when the script, shell or demo ends, before the exit action. */
export const GUEST_EXIT_MARKER = 'VIRTKIT-EXIT';

/** Where the initramfs keeps the list of modules to load (`name file` per line, in order). */
export const GUEST_MODULE_LIST = '/etc/virtkit/modules';

/** Options of {@link createInitScript}. */
export interface InitScriptOptions {
  /** Mode used when the kernel command line has no `virtkit.mode=`; default `shell`. */
  readonly mode?: GuestMode;
  /** Action used when the kernel command line has no `virtkit.exit=`; default `reboot`. */
  readonly exit?: GuestExitAction;
}

/**
 * Returns the text of `/init`. It needs busybox at `/bin/busybox`; the module list is read from
 * {@link GUEST_MODULE_LIST} and the script of `script` mode from `/test.sh`.
 *
 * Kernel command line switches: `virtkit.mode=shell|script|demo`, `virtkit.exit=reboot|poweroff|shell`,
 * `virtkit.debug` (trace /init with `set -x`).
 */
export function createInitScript(options: InitScriptOptions = {}): string {
  const mode = options.mode ?? 'shell';
  const exit = options.exit ?? 'reboot';
  return `#!/bin/busybox sh
# /init of a Virtkit guest, written by @virtkit/guest. Runs as PID 1 from the initramfs.
# Kernel command line switches:
#   virtkit.mode=shell|script|demo      what to run once devices are up (built-in default: ${mode})
#   virtkit.exit=reboot|poweroff|shell  what to do when it ends (built-in default: ${exit})
#   virtkit.debug                       trace this script
# With "reboot=k panic=-1" on the kernel command line and QEMU's -no-reboot, the final reboot ends QEMU.

/bin/busybox mkdir -p /proc /sys /dev /tmp /run /root /bin /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
# Applet links are made here rather than at build time: the build host may not be able to run
# this architecture's busybox to ask it for its applet list.
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev || echo "virtkit: could not mount devtmpfs on /dev"
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
exec </dev/console >/dev/console 2>&1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM="\${TERM:-linux}"
cd /
hostname virtkit
ip link set lo up 2>/dev/null

mode=${mode}
on_exit=${exit}
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    virtkit.mode=*) mode="\${arg#virtkit.mode=}" ;;
    virtkit.exit=*) on_exit="\${arg#virtkit.exit=}" ;;
    virtkit.debug) set -x ;;
  esac
done

if [ -f ${GUEST_MODULE_LIST} ]; then
  while read -r name file; do
    case "$name" in ''|'#'*) continue ;; esac
    echo "virtkit: loading $name"
    insmod "$file" || echo "virtkit: failed to load $name ($file)"
  done < ${GUEST_MODULE_LIST}
fi

echo "virtkit: linux $(uname -r) $(uname -m), mode $mode, up $(cut -d' ' -f1 /proc/uptime) s"
echo ${GUEST_READY_MARKER}

virtkit_shell() {
  echo "virtkit: shell on the console; leave it with exit"
  # setsid + cttyhack give the shell a controlling terminal, so job control and ^C work.
  setsid cttyhack sh -l
}

virtkit_demo() {
  echo "virtkit demo: virtio devices"
  for dev in /sys/bus/virtio/devices/*; do
    [ -e "$dev" ] || continue
    id=$(cat "$dev/device")
    case "$id" in
      0x0001) kind=net ;; 0x0002) kind=block ;; 0x0003) kind=console ;; 0x0004) kind=rng ;;
      0x0005) kind=balloon ;; 0x0009) kind=9p ;; 0x0010) kind=gpu ;; 0x0012) kind=input ;;
      0x0013) kind=vsock ;; 0x001a) kind=fs ;; *) kind=other ;;
    esac
    driver=none
    [ -e "$dev/driver" ] && driver=$(basename "$(readlink "$dev/driver")")
    echo "  \${dev##*/}: $kind (device $id) driver $driver"
  done
  for disk in /sys/block/vd*; do
    [ -e "$disk" ] || continue
    name=\${disk##*/}
    echo "  /dev/$name: $(cat "$disk/size") sectors, first 4 KiB md5 $(dd if=/dev/$name bs=4096 count=1 2>/dev/null | md5sum | cut -d' ' -f1)"
  done
  for nic in /sys/class/net/*; do
    name=\${nic##*/}
    [ "$name" = lo ] && continue
    ip link set "$name" up 2>/dev/null
    echo "  $name: mac $(cat "$nic/address"), mtu $(cat "$nic/mtu")"
  done
  for port in /sys/class/virtio-ports/*; do
    [ -e "$port" ] || continue
    name=$(cat "$port/name" 2>/dev/null)
    echo "  console port: \${port##*/}\${name:+ name $name}"
  done
  if [ -e /dev/hwrng ]; then
    echo "  hwrng: $(cat /sys/class/misc/hw_random/rng_current 2>/dev/null), 16 bytes: $(timeout 5 dd if=/dev/hwrng bs=16 count=1 2>/dev/null | hexdump -v -e '16/1 "%02x"')"
  fi
  echo "  uptime $(cut -d' ' -f1 /proc/uptime) s"
}

virtkit_finish() {
  echo "${GUEST_EXIT_MARKER} $1"
  sync
  case "$on_exit" in
    poweroff) poweroff -f ;;
    shell) virtkit_shell; reboot -f ;;
    *) reboot -f ;;
  esac
  # PID 1 must not exit (the kernel would panic): wait for the machine to stop.
  while :; do sleep 3600; done
}

case "$mode" in
  shell)
    virtkit_shell
    virtkit_finish $?
    ;;
  script)
    if [ -f /test.sh ]; then
      sh /test.sh
      virtkit_finish $?
    else
      echo "virtkit: mode script, but this initramfs has no /test.sh"
      virtkit_finish 127
    fi
    ;;
  demo)
    virtkit_demo
    virtkit_finish $?
    ;;
  *)
    echo "virtkit: unknown virtkit.mode=$mode (expected shell, script or demo)"
    virtkit_finish 2
    ;;
esac
`;
}

/**
 * Finds the exit code a guest reported (`VIRTKIT-EXIT <code>`) in its console output, or
 * undefined if it has not reported one. The marker may follow other text on the same line
 * (a script's last output without a newline).
 */
export function parseGuestExit(consoleOutput: string): number | undefined {
  const match = /VIRTKIT-EXIT (\d+)\r?$/m.exec(consoleOutput);
  return match ? Number(match[1]) : undefined;
}
