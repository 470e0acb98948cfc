import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterEach, describe, expect, it } from 'vitest';
import { type CpioRecord, encodeCpio, readCpio } from './cpio.js';
import { buildInitramfs, composeInitramfs, type InitramfsContents } from './initramfs.js';
import { FAKE_BUSYBOX, makeFakeGuestCache } from './test-fixtures.js';

const contents: InitramfsContents = {
  kernelRelease: '6.1.0-99-cloud-amd64',
  busybox: FAKE_BUSYBOX,
  modules: [
    { name: 'virtio_ring', data: Buffer.from('ring') },
    { name: 'virtio', data: Buffer.from('virtio') },
    { name: 'virtio_net', data: Buffer.from('net') },
  ],
  modulesDep:
    'virtio_ring.ko:\nvirtio.ko: virtio_ring.ko\nvirtio_net.ko: virtio.ko virtio_ring.ko\n',
};

function records(entries = composeInitramfs(contents)): Map<string, CpioRecord> {
  return new Map(readCpio(encodeCpio(entries)).map((record) => [record.name, record]));
}

function text(record: CpioRecord | undefined): string {
  expect(record).toBeDefined();
  return Buffer.from(record!.data).toString();
}

const temporaryDirs: string[] = [];
afterEach(() => {
  for (const dir of temporaryDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('composeInitramfs', () => {
  it('holds busybox, /init, device nodes and the modules with their load list', () => {
    const byName = records();
    expect(byName.get('bin/busybox')).toMatchObject({ type: 'file', mode: 0o100755 });
    expect(Buffer.from(byName.get('bin/busybox')!.data).equals(FAKE_BUSYBOX)).toBe(true);
    expect(byName.get('bin/sh')).toMatchObject({ type: 'symlink' });
    expect(text(byName.get('bin/sh'))).toBe('busybox');
    expect(byName.get('init')).toMatchObject({ type: 'file', mode: 0o100755 });
    expect(text(byName.get('init'))).toMatch(/^mode=shell$/m);
    expect(byName.get('dev/console')).toMatchObject({
      type: 'char-device',
      rdevMajor: 5,
      rdevMinor: 1,
    });
    expect(byName.get('dev/null')).toMatchObject({
      type: 'char-device',
      rdevMajor: 1,
      rdevMinor: 3,
    });
    expect(byName.get('tmp')).toMatchObject({ type: 'directory', mode: 0o41777 });
    expect(
      text(byName.get('etc/virtkit/modules'))
        .split('\n')
        .filter((l) => !l.startsWith('#')),
    ).toEqual([
      'virtio_ring /lib/modules/6.1.0-99-cloud-amd64/virtio_ring.ko',
      'virtio /lib/modules/6.1.0-99-cloud-amd64/virtio.ko',
      'virtio_net /lib/modules/6.1.0-99-cloud-amd64/virtio_net.ko',
      '',
    ]);
    expect(text(byName.get('lib/modules/6.1.0-99-cloud-amd64/virtio_net.ko'))).toBe('net');
    expect(text(byName.get('lib/modules/6.1.0-99-cloud-amd64/modules.dep'))).toBe(
      contents.modulesDep,
    );
    expect(byName.has('test.sh')).toBe(false);
  });

  it('puts every parent directory before its children', () => {
    const list = readCpio(
      encodeCpio(
        composeInitramfs({
          ...contents,
          extraFiles: [{ type: 'file', path: '/opt/tools/bin/fio', data: 'x', mode: 0o755 }],
        }),
      ),
    );
    const seen = new Set<string>();
    for (const record of list) {
      const parent = record.name.split('/').slice(0, -1).join('/');
      if (parent !== '') expect(seen, `${parent} before ${record.name}`).toContain(parent);
      seen.add(record.name);
    }
    expect(seen).toContain('opt/tools/bin/fio');
  });

  it('adds /test.sh in script mode and refuses script mode without a script', () => {
    const byName = records(
      composeInitramfs({ ...contents, mode: 'script', script: 'echo hi\nexit 3\n' }),
    );
    expect(byName.get('test.sh')).toMatchObject({ mode: 0o100755 });
    expect(text(byName.get('test.sh'))).toBe('echo hi\nexit 3\n');
    expect(text(byName.get('init'))).toMatch(/^mode=script$/m);
    expect(() => composeInitramfs({ ...contents, mode: 'script' })).toThrow(/needs a script/);
    expect(() => composeInitramfs({ ...contents, mode: 'bogus' as 'shell' })).toThrow(
      /unknown guest mode/,
    );
  });

  it('lets extra files replace standard ones but not nest under a file', () => {
    const byName = records(
      composeInitramfs({
        ...contents,
        extraFiles: [{ type: 'file', path: '/etc/profile', data: 'custom' }],
      }),
    );
    expect(text(byName.get('etc/profile'))).toBe('custom');
    expect(() =>
      composeInitramfs({
        ...contents,
        extraFiles: [{ type: 'file', path: 'init/oops', data: '' }],
      }),
    ).toThrow(/inside init, which is not a directory/);
  });

  it('is reproducible', () => {
    expect(
      encodeCpio(composeInitramfs(contents)).equals(encodeCpio(composeInitramfs(contents))),
    ).toBe(true);
  });

  it.skipIf(spawnSync('cpio', ['--version']).status !== 0)('is readable by the cpio tool', () => {
    const listing = execFileSync('cpio', ['-t', '--quiet'], {
      input: encodeCpio(composeInitramfs(contents)),
    })
      .toString()
      .split('\n');
    expect(listing).toContain('init');
    expect(listing).toContain('lib/modules/6.1.0-99-cloud-amd64/virtio.ko');
  });
});

describe('buildInitramfs', () => {
  it('writes a gzipped image from a prepared cache', async () => {
    const dir = makeFakeGuestCache();
    temporaryDirs.push(dir);
    const built = await buildInitramfs({ dir, mode: 'demo' });
    expect(built.path).toBe(join(dir, 'initramfs-demo.cpio.gz'));
    const byName = new Map(readCpio(gunzipSync(readFileSync(built.path))).map((r) => [r.name, r]));
    expect(text(byName.get('init'))).toMatch(/^mode=demo$/m);
    expect(text(byName.get('etc/virtkit/modules'))).toContain(
      'virtio_blk /lib/modules/6.1.0-99-cloud-amd64/virtio_blk.ko',
    );
    expect(text(byName.get('lib/modules/6.1.0-99-cloud-amd64/virtio.ko'))).toBe(
      'fake module virtio',
    );
    expect(built.entries).toBe(byName.size);
  });

  it('names images with a script by content and copies host files', async () => {
    const dir = makeFakeGuestCache();
    temporaryDirs.push(dir);
    writeFileSync(join(dir, 'tool'), 'host tool');
    const options = {
      dir,
      mode: 'script' as const,
      script: 'exit 0\n',
      extraFiles: [
        {
          type: 'host-file' as const,
          path: '/usr/bin/tool',
          source: join(dir, 'tool'),
          mode: 0o755,
        },
      ],
    };
    const first = await buildInitramfs(options);
    const second = await buildInitramfs(options);
    const other = await buildInitramfs({ ...options, script: 'exit 1\n' });
    expect(first.path).toMatch(/initramfs-script-[0-9a-f]{12}\.cpio\.gz$/);
    expect(second.path).toBe(first.path);
    expect(other.path).not.toBe(first.path);
    const tool = readCpio(gunzipSync(readFileSync(first.path))).find(
      (r) => r.name === 'usr/bin/tool',
    );
    expect(tool).toMatchObject({ mode: 0o100755 });
    expect(text(tool)).toBe('host tool');
    await expect(
      buildInitramfs({
        dir,
        extraFiles: [{ type: 'host-file', path: 'x', source: join(dir, 'missing') }],
      }),
    ).rejects.toThrow(/cannot read host file/);
  });

  it('says to prepare first when the cache is empty', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'virtkit-empty-'));
    temporaryDirs.push(dir);
    await expect(buildInitramfs({ dir })).rejects.toMatchObject({
      code: 'GUEST_NOT_PREPARED',
      message: expect.stringContaining('prepareGuest'),
    });
  });
});
