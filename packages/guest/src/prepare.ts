/**
 * prepareGuest: fetches a Debian kernel and busybox-static with `apt-get download` through a
 * private apt configuration inside the cache (the host's apt state is never touched and nothing
 * is installed), unpacks them with `dpkg-deb -x`, and keeps the kernel, the virtio modules (in
 * load order, decompressed) and busybox.
 */

import { existsSync } from 'node:fs';
import { copyFile, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  defaultGuestDir,
  GUEST_ARCHES,
  type GuestArch,
  type GuestManifest,
  MANIFEST_FORMAT,
  type ManifestModule,
  manifestFilesPresent,
  readManifest,
  withCacheLock,
  writeManifest,
} from './cache.js';
import { GuestError } from './errors.js';
import {
  DEFAULT_GUEST_MODULES,
  formatModulesDep,
  normalizeModuleName,
  readModuleFile,
  resolveModulesIn,
} from './modules.js';
import { requireTools, runCommand } from './tools.js';

/** Steps reported through {@link PrepareGuestOptions.onProgress}. */
export type GuestProgressStep =
  | 'cache'
  | 'lock'
  | 'update'
  | 'resolve'
  | 'download'
  | 'extract'
  | 'kernel'
  | 'modules'
  | 'busybox'
  | 'ready';

/** One progress report: a step and a human-readable detail line. */
export interface GuestProgress {
  readonly step: GuestProgressStep;
  readonly detail: string;
}

/** Options of {@link prepareGuest}. */
export interface PrepareGuestOptions {
  /** Guest architecture; default `x86_64`. */
  readonly arch?: GuestArch;
  /** Cache directory; default {@link defaultGuestDir}(arch). */
  readonly dir?: string;
  /** Receives progress reports. Must not throw. */
  readonly onProgress?: (progress: GuestProgress) => void;
  /** Kernel modules to provide (dependencies are added); default {@link DEFAULT_GUEST_MODULES}. */
  readonly modules?: readonly string[];
  /** Run `apt-get update` and re-resolve versions even if the cache is complete. */
  readonly refresh?: boolean;
  /** Debian mirror; default `http://deb.debian.org/debian`. */
  readonly mirror?: string;
  /** Debian security mirror (bookworm only); default `http://deb.debian.org/debian-security`. */
  readonly securityMirror?: string;
  /** Keyring that signs the archive; default `/usr/share/keyrings/debian-archive-keyring.gpg`. */
  readonly keyring?: string;
}

/** A prepared guest. Every path is absolute. */
export interface PreparedGuest {
  readonly arch: GuestArch;
  readonly dir: string;
  /** Kernel image to boot (`bzImage` for x86_64, `Image` for riscv64). */
  readonly kernel: string;
  /** `uname -r` of the kernel. */
  readonly kernelRelease: string;
  /** Debian package and version the kernel came from. */
  readonly kernelPackage: string;
  readonly kernelVersion: string;
  /** Statically linked busybox for the guest architecture. */
  readonly busybox: string;
  readonly busyboxVersion: string;
  /** Modules to load, in order. */
  readonly modules: readonly { readonly name: string; readonly file: string }[];
  /** Requested modules that are built into the kernel. */
  readonly builtinModules: readonly string[];
  /** `modules.dep` for {@link PreparedGuest.modules}, with paths relative to its directory. */
  readonly modulesDep: string;
  /** True if nothing had to be downloaded or unpacked. */
  readonly fromCache: boolean;
}

/** Where each architecture's guest comes from. */
interface ArchSpec {
  readonly debianArch: string;
  readonly suite: string;
  readonly kernelMetapackage: string;
  readonly sources: (options: PrepareGuestOptions) => string[];
}

const DEFAULT_KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
const DEFAULT_MIRROR = 'http://deb.debian.org/debian';
const DEFAULT_SECURITY_MIRROR = 'http://deb.debian.org/debian-security';

const ARCH_SPECS: Record<GuestArch, ArchSpec> = {
  // Bookworm's cloud flavour: small, ACPI, every virtio driver a module (guests.md). Updates and
  // security carry the current kernel ABI, as on a bookworm host.
  x86_64: {
    debianArch: 'amd64',
    suite: 'bookworm',
    kernelMetapackage: 'linux-image-cloud-amd64',
    sources: (options) => {
      const mirror = options.mirror ?? DEFAULT_MIRROR;
      const security = options.securityMirror ?? DEFAULT_SECURITY_MIRROR;
      return [
        `${mirror} bookworm main`,
        `${mirror} bookworm-updates main`,
        `${security} bookworm-security main`,
      ];
    },
  },
  // Trixie main, exactly the configuration checked in guests.md.
  riscv64: {
    debianArch: 'riscv64',
    suite: 'trixie',
    kernelMetapackage: 'linux-image-riscv64',
    sources: (options) => [`${options.mirror ?? DEFAULT_MIRROR} trixie main`],
  },
};

/** The private apt configuration of one cache directory. */
class PrivateApt {
  readonly root: string;
  readonly options: string[];

  constructor(
    dir: string,
    readonly spec: ArchSpec,
  ) {
    this.root = join(dir, 'apt');
    this.options = [
      ['Dir::Etc::SourceList', join(this.root, 'sources.list')],
      ['Dir::Etc::SourceParts', join(this.root, 'sources.list.d')],
      // The host's pins must not pick versions for a guest of another suite.
      ['Dir::Etc::Preferences', join(this.root, 'preferences')],
      ['Dir::Etc::PreferencesParts', join(this.root, 'preferences.d')],
      ['Dir::State::Lists', join(this.root, 'lists')],
      ['Dir::Cache', join(this.root, 'cache')],
      ['APT::Architectures::', spec.debianArch],
      ['APT::Architecture', spec.debianArch],
      ['Acquire::Languages', 'none'],
      // apt downloads as the unprivileged _apt user when run as root; it cannot enter a cache
      // under /root, so keep the download in this process instead of warning about it.
      ...(process.getuid?.() === 0 ? [['APT::Sandbox::User', 'root']] : []),
    ].flatMap(([key, value]) => ['-o', `${key}=${value}`]);
  }

  async setUp(options: PrepareGuestOptions): Promise<void> {
    for (const sub of [
      'sources.list.d',
      'preferences.d',
      'lists/partial',
      'cache/archives/partial',
    ]) {
      await mkdir(join(this.root, sub), { recursive: true });
    }
    const keyring = options.keyring ?? DEFAULT_KEYRING;
    const lines = this.spec
      .sources(options)
      .map((source) => `deb [arch=${this.spec.debianArch} signed-by=${keyring}] ${source}\n`);
    await writeFile(join(this.root, 'sources.list'), lines.join(''));
  }

  async hasLists(): Promise<boolean> {
    const entries = await readdir(join(this.root, 'lists')).catch(() => []);
    return entries.some((name) => /_Packages(\.\w+)?$/.test(name));
  }

  update(): Promise<unknown> {
    return runCommand('apt-get', [...this.options, 'update']);
  }

  async depends(pkg: string): Promise<string[]> {
    const { stdout } = await runCommand('apt-cache', [...this.options, 'depends', pkg]);
    return [...stdout.toString().matchAll(/^\s*\|?Depends:\s*([^\s<>]+)\s*$/gm)].map((m) => m[1]!);
  }

  async candidateVersion(pkg: string): Promise<string | undefined> {
    try {
      const { stdout } = await runCommand('apt-cache', [
        ...this.options,
        'show',
        '--no-all-versions',
        pkg,
      ]);
      return /^Version:\s*(\S+)/m.exec(stdout.toString())?.[1];
    } catch {
      return undefined;
    }
  }

  download(pkg: string, version: string, cwd: string): Promise<unknown> {
    return runCommand('apt-get', [...this.options, 'download', `${pkg}=${version}`], { cwd });
  }
}

/** File name apt gives a downloaded package (the epoch's colon is URL-encoded). */
function debFileName(pkg: string, version: string, debianArch: string): string {
  return `${pkg}_${version.replaceAll(':', '%3a')}_${debianArch}.deb`;
}

async function findFirst(dir: string, pattern: RegExp): Promise<string | undefined> {
  const entries = await readdir(dir).catch(() => [] as string[]);
  return entries.sort().find((name) => pattern.test(name));
}

async function nonEmptyFile(path: string): Promise<boolean> {
  return stat(path).then(
    (info) => info.isFile() && info.size > 0,
    () => false,
  );
}

function toPrepared(dir: string, manifest: GuestManifest, fromCache: boolean): PreparedGuest {
  return {
    arch: manifest.arch,
    dir,
    kernel: join(dir, manifest.kernel.file),
    kernelRelease: manifest.kernel.release,
    kernelPackage: manifest.kernel.package,
    kernelVersion: manifest.kernel.version,
    busybox: join(dir, manifest.busybox.file),
    busyboxVersion: manifest.busybox.version,
    modules: manifest.modules.load.map((module) => ({
      name: module.name,
      file: join(dir, module.file),
    })),
    builtinModules: manifest.modules.builtin,
    modulesDep: join(dir, manifest.modules.dep),
    fromCache,
  };
}

function validateArch(arch: unknown): GuestArch {
  if (!GUEST_ARCHES.includes(arch as GuestArch)) {
    throw new GuestError(
      'INVALID_OPTIONS',
      `unknown guest architecture ${JSON.stringify(arch)} (expected ${GUEST_ARCHES.join(' or ')})`,
    );
  }
  return arch as GuestArch;
}

/**
 * Reads an already prepared guest from its cache without running anything.
 * Throws `GUEST_NOT_PREPARED` if the cache is missing or incomplete.
 */
export async function readPreparedGuest(
  options: { readonly arch?: GuestArch; readonly dir?: string } = {},
): Promise<PreparedGuest> {
  const arch = validateArch(options.arch ?? 'x86_64');
  const dir = options.dir ?? defaultGuestDir(arch);
  const manifest = await readManifest(dir, arch);
  if (!manifest || !(await manifestFilesPresent(dir, manifest))) {
    throw new GuestError(
      'GUEST_NOT_PREPARED',
      `no prepared ${arch} guest in ${dir}: run prepareGuest (or "virtkit guest prepare --arch ${arch}") first`,
    );
  }
  return toPrepared(dir, manifest, true);
}

/**
 * Makes sure the cache holds a bootable guest kernel, its virtio modules and busybox, downloading
 * from Debian only what is missing. A second call with a complete cache runs no program at all.
 *
 * @example
 * ```ts
 * const guest = await prepareGuest({
 *   arch: 'x86_64',
 *   onProgress: ({ step, detail }) => console.log(`${step}: ${detail}`),
 * });
 * const { path } = await buildInitramfs({ arch: 'x86_64', mode: 'shell' });
 * // qemu-system-x86_64 -M q35 -m 512 -nographic -kernel guest.kernel -initrd path ...
 * ```
 */
export async function prepareGuest(options: PrepareGuestOptions = {}): Promise<PreparedGuest> {
  const arch = validateArch(options.arch ?? 'x86_64');
  const dir = options.dir ?? defaultGuestDir(arch);
  const report = (step: GuestProgressStep, detail: string): void =>
    options.onProgress?.({ step, detail });
  const requested = [
    ...new Set((options.modules ?? DEFAULT_GUEST_MODULES).map(normalizeModuleName)),
  ];

  const satisfied = async (): Promise<GuestManifest | undefined> => {
    const manifest = await readManifest(dir, arch);
    if (!manifest || options.refresh) return undefined;
    const have = new Set([...manifest.modules.requested]);
    if (!requested.every((name) => have.has(name))) return undefined;
    return (await manifestFilesPresent(dir, manifest)) ? manifest : undefined;
  };

  const cached = await satisfied();
  if (cached) {
    report('ready', `${arch} guest in ${dir} (cached: ${cached.kernel.release})`);
    return toPrepared(dir, cached, true);
  }

  return withCacheLock(
    dir,
    async () => {
      // Another process may have finished the job while we waited for the lock.
      const done = await satisfied();
      if (done) {
        report(
          'ready',
          `${arch} guest in ${dir} (prepared by another process: ${done.kernel.release})`,
        );
        return toPrepared(dir, done, true);
      }
      return prepareLocked(arch, dir, requested, options, report);
    },
    { onWait: (owner) => report('lock', `waiting for ${owner} preparing ${dir}`) },
  );
}

async function prepareLocked(
  arch: GuestArch,
  dir: string,
  requested: readonly string[],
  options: PrepareGuestOptions,
  report: (step: GuestProgressStep, detail: string) => void,
): Promise<PreparedGuest> {
  const spec = ARCH_SPECS[arch];
  requireTools(['apt-get', 'apt-cache', 'dpkg-deb']);
  const keyring = options.keyring ?? DEFAULT_KEYRING;
  if (!existsSync(keyring)) {
    throw new GuestError(
      'KEYRING_MISSING',
      `Debian archive keyring ${keyring} not found: install the debian-archive-keyring package or pass keyring`,
    );
  }

  const apt = new PrivateApt(dir, spec);
  await apt.setUp(options);
  if (options.refresh || !(await apt.hasLists())) {
    report(
      'update',
      `apt-get update (Debian ${spec.suite} ${spec.debianArch}, private lists in ${apt.root})`,
    );
    await apt.update();
  }

  report('resolve', `${spec.kernelMetapackage} dependencies`);
  const kernelPackage = (await apt.depends(spec.kernelMetapackage)).find((name) =>
    /^linux-image-\d/.test(name),
  );
  if (kernelPackage === undefined) {
    throw new GuestError(
      'PACKAGE_LAYOUT',
      `${spec.kernelMetapackage} in Debian ${spec.suite} ${spec.debianArch} depends on no versioned linux-image package`,
    );
  }
  const packages: { name: string; version: string }[] = [];
  for (const name of [kernelPackage, 'busybox-static']) {
    const version = await apt.candidateVersion(name);
    if (version === undefined) {
      throw new GuestError(
        'PACKAGE_LAYOUT',
        `package ${name} not found in Debian ${spec.suite} ${spec.debianArch}`,
      );
    }
    packages.push({ name, version });
  }
  report('resolve', packages.map((p) => `${p.name} ${p.version}`).join(', '));

  const debs = join(dir, 'debs');
  await mkdir(debs, { recursive: true });
  const files = new Map<string, string>();
  for (const { name, version } of packages) {
    const file = join(debs, debFileName(name, version, spec.debianArch));
    if (await nonEmptyFile(file)) {
      report('download', `${name} ${version} already downloaded`);
    } else {
      report('download', `apt-get download ${name}=${version}`);
      await apt.download(name, version, debs);
      if (!(await nonEmptyFile(file))) {
        throw new GuestError(
          'PACKAGE_LAYOUT',
          `apt-get download ${name}=${version} did not produce ${file}`,
        );
      }
    }
    files.set(name, file);
  }
  // Older versions left by a previous refresh are of no further use.
  const keep = new Set([...files.values()].map((file) => file.slice(debs.length + 1)));
  for (const name of await readdir(debs)) {
    if (name.endsWith('.deb') && !keep.has(name)) await rm(join(debs, name), { force: true });
  }

  const extract = join(dir, 'extract');
  await rm(extract, { recursive: true, force: true });
  await mkdir(extract, { recursive: true });
  try {
    const kernelRoot = join(extract, 'kernel');
    const busyboxRoot = join(extract, 'busybox');
    report('extract', `dpkg-deb -x ${kernelPackage}`);
    await runCommand('dpkg-deb', ['-x', files.get(kernelPackage)!, kernelRoot]);
    report('extract', 'dpkg-deb -x busybox-static');
    await runCommand('dpkg-deb', ['-x', files.get('busybox-static')!, busyboxRoot]);

    // bookworm keeps modules in /lib/modules, trixie (merged /usr) in /usr/lib/modules.
    let modulesParent: string | undefined;
    for (const candidate of ['lib/modules', 'usr/lib/modules']) {
      if (existsSync(join(kernelRoot, candidate))) modulesParent = join(kernelRoot, candidate);
    }
    const release = modulesParent ? await findFirst(modulesParent, /^\d/) : undefined;
    if (modulesParent === undefined || release === undefined) {
      throw new GuestError(
        'PACKAGE_LAYOUT',
        `${kernelPackage} has no lib/modules/<release> directory`,
      );
    }
    const image = await findFirst(
      join(kernelRoot, 'boot'),
      new RegExp(`^(vmlinuz|vmlinux|Image)-${escapeRegExp(release)}$`),
    );
    if (image === undefined) {
      throw new GuestError(
        'PACKAGE_LAYOUT',
        `${kernelPackage} has no /boot/vmlinuz-${release} (or vmlinux, Image)`,
      );
    }

    await rm(join(dir, 'kernel'), { recursive: true, force: true });
    await mkdir(join(dir, 'kernel'), { recursive: true });
    const kernelFile = `kernel/${image}`;
    await copyFile(join(kernelRoot, 'boot', image), join(dir, kernelFile));
    let configFile: string | undefined;
    if (existsSync(join(kernelRoot, 'boot', `config-${release}`))) {
      configFile = `kernel/config-${release}`;
      await copyFile(join(kernelRoot, 'boot', `config-${release}`), join(dir, configFile));
    }
    report('kernel', `${join(dir, kernelFile)} (${release})`);

    const modulesDir = join(modulesParent, release);
    const resolved = await resolveModulesIn(modulesDir, requested);
    const moduleTarget = `modules/${release}`;
    await rm(join(dir, 'modules'), { recursive: true, force: true });
    await mkdir(join(dir, moduleTarget), { recursive: true });
    const load: ManifestModule[] = [];
    for (const module of resolved.modules) {
      const file = `${moduleTarget}/${module.name}.ko`;
      // busybox insmod hands the kernel the file as is, and the kernel only decompresses
      // modules for finit_module callers that ask for it; store them uncompressed.
      await writeFile(join(dir, file), await readModuleFile(join(modulesDir, module.path)));
      load.push({ name: module.name, file, deps: module.deps });
    }
    const depFile = `${moduleTarget}/modules.dep`;
    await writeFile(
      join(dir, depFile),
      formatModulesDep(
        load.map((module) => ({ name: module.name, path: `${module.name}.ko`, deps: module.deps })),
      ),
    );
    report(
      'modules',
      `${load.map((module) => module.name).join(' ') || '(none)'}${resolved.builtin.length > 0 ? `; built in: ${resolved.builtin.join(' ')}` : ''} (from ${resolved.source})`,
    );

    let busyboxSource: string | undefined;
    for (const candidate of ['bin/busybox', 'usr/bin/busybox']) {
      if (existsSync(join(busyboxRoot, candidate))) busyboxSource = join(busyboxRoot, candidate);
    }
    if (busyboxSource === undefined) {
      throw new GuestError('PACKAGE_LAYOUT', 'busybox-static has no bin/busybox');
    }
    await rm(join(dir, 'busybox'), { recursive: true, force: true });
    await mkdir(join(dir, 'busybox'), { recursive: true });
    await copyFile(busyboxSource, join(dir, 'busybox', 'busybox'));
    report('busybox', `${join(dir, 'busybox', 'busybox')} (${packages[1]!.version})`);

    const manifest: GuestManifest = {
      format: MANIFEST_FORMAT,
      arch,
      suite: spec.suite,
      debianArch: spec.debianArch,
      kernel: {
        package: kernelPackage,
        version: packages[0]!.version,
        release,
        file: kernelFile,
        ...(configFile === undefined ? {} : { config: configFile }),
      },
      busybox: {
        package: 'busybox-static',
        version: packages[1]!.version,
        file: 'busybox/busybox',
      },
      modules: {
        requested,
        builtin: resolved.builtin,
        load,
        source: resolved.source,
        dep: depFile,
      },
    };
    await writeManifest(dir, manifest);
    report('ready', `${arch} guest in ${dir}`);
    return toPrepared(dir, manifest, false);
  } finally {
    // The unpacked packages are large (100+ MB); the .debs stay, so a change of module list
    // needs no download.
    await rm(extract, { recursive: true, force: true });
  }
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
