/**
 * @virtkit/guest prepares real Linux guests for Virtkit: a Debian kernel with its virtio modules
 * and busybox-static, fetched with apt into a cache, and reproducible initramfs images whose
 * `/init` loads the modules and opens a shell, runs a test script or a device demo.
 */

export type { GuestArch, GuestManifest, LockOptions, ManifestModule } from './cache.js';
export { defaultGuestDir, GUEST_ARCHES } from './cache.js';
export type { GuestCommandIO } from './cli.js';
export { runGuestCommand } from './cli.js';
export type {
  CpioDevice,
  CpioDirectory,
  CpioEntry,
  CpioFile,
  CpioOptions,
  CpioRecord,
  CpioSymlink,
} from './cpio.js';
export { CpioWriter, cpioChunks, encodeCpio, gzipCpio, readCpio, writeCpioFile } from './cpio.js';
export type { GuestErrorCode } from './errors.js';
export { GuestError } from './errors.js';
export type { GuestExitAction, GuestMode, InitScriptOptions } from './init.js';
export {
  createInitScript,
  GUEST_EXIT_ACTIONS,
  GUEST_EXIT_MARKER,
  GUEST_MODES,
  GUEST_MODULE_LIST,
  GUEST_READY_MARKER,
  parseGuestExit,
} from './init.js';
export type {
  BuildInitramfsOptions,
  BuiltInitramfs,
  GuestFile,
  HostFile,
  InitramfsContents,
} from './initramfs.js';
export { buildInitramfs, composeInitramfs } from './initramfs.js';
export type { LoadOrder, ModuleInfo, ResolvedModules } from './modules.js';
export {
  DEFAULT_GUEST_MODULES,
  formatModulesDep,
  moduleNameOf,
  parseModulesDep,
  readModinfo,
  resolveLoadOrder,
  resolveModulesIn,
} from './modules.js';
export type {
  GuestProgress,
  GuestProgressStep,
  PreparedGuest,
  PrepareGuestOptions,
} from './prepare.js';
export { prepareGuest, readPreparedGuest } from './prepare.js';
export type { QemuCommand, QemuCommandOptions } from './qemu.js';
export { qemuCommand } from './qemu.js';
