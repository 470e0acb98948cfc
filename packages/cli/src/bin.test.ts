/**
 * The `virtkit` executable as a user runs it: a bundle of src/bin.ts (built here from the sources
 * of every workspace package, so no prior `pnpm build` is needed), spawned with node.
 */

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { close, socketpair } from '@virtkit/linux';
import { FrontendGuest, TestFrontend } from '@virtkit/vhost-user/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../..', import.meta.url));
let dir: string;
let bin: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'virtkit-bin-'));
  const { build } = await import('tsup');
  const core = JSON.parse(readFileSync(join(root, 'packages/core/package.json'), 'utf8')) as {
    version: string;
  };
  // koffi is native: keep it external, resolved where @virtkit/linux has it.
  const koffi = createRequire(join(root, 'packages/linux/package.json')).resolve('koffi');
  await build({
    entry: { virtkit: join(root, 'packages/cli/src/bin.ts') },
    outDir: dir,
    format: ['esm'],
    platform: 'node',
    target: 'node20',
    noExternal: [/^@virtkit\//, 'eventemitter3', 'semver'],
    define: { __VIRTKIT_CORE_VERSION__: JSON.stringify(core.version) },
    esbuildOptions(options) {
      options.conditions = ['@virtkit/source', 'module', 'node'];
    },
    esbuildPlugins: [
      {
        name: 'koffi-external',
        setup(builder) {
          builder.onResolve({ filter: /^koffi$/ }, () => ({ path: koffi, external: true }));
        },
      },
    ],
    splitting: false,
    silent: true,
    dts: false,
    sourcemap: false,
    config: false,
    banner: { js: '#!/usr/bin/env node' },
  });
  bin = join(dir, 'virtkit.js');
}, 60_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

function virtkit(args: string[]) {
  return spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 20_000 });
}

function exited(child: ChildProcess): Promise<{ code: number | null; stderr: string }> {
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stderr })));
}

async function appears(path: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`${path} did not appear`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('the virtkit executable', () => {
  it('prints help with status 0 and a usage error on one line with status 2', () => {
    const help = virtkit(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/device plugins/);
    expect(help.stdout).toMatch(/^ {2}blk - /m);
    const bad = virtkit([
      'vhost-user',
      '--socket',
      join(dir, 'x.sock'),
      '--device',
      'blk,queues=0',
    ]);
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim().split('\n')).toEqual([
      "virtkit vhost-user: blk: option 'queues' must be an integer from 1 to 16, got '0' (see virtkit vhost-user --help)",
    ]);
    expect(virtkit(['guest', '--help']).status).toBe(0);
  });

  it('stops cleanly on SIGTERM, removing its socket', async () => {
    const socket = join(dir, 'term.sock');
    const child = spawn(process.execPath, [
      bin,
      'vhost-user',
      '--socket',
      socket,
      '--device',
      'blk,backend=memory,size=1M',
    ]);
    const done = exited(child);
    await appears(socket);
    child.kill('SIGTERM');
    const { code, stderr } = await done;
    expect(code).toBe(0);
    expect(stderr).toMatch(/stopping: asked to stop/);
    expect(existsSync(socket)).toBe(false);
  });

  it('serves a connection inherited as a descriptor (--fd)', async () => {
    const [ours, theirs] = socketpair({ nonBlocking: true });
    const child = spawn(
      process.execPath,
      [bin, 'vhost-user', '--fd', '3', '--device', 'blk,backend=memory,size=1M'],
      { stdio: ['ignore', 'ignore', 'pipe', theirs] },
    );
    close(theirs);
    const done = exited(child);
    const frontend = new TestFrontend(ours, new FrontendGuest());
    await frontend.handshake();
    const queue = await frontend.startQueue(0);
    const header = new Uint8Array(16);
    header[0] = 8; // GET_ID
    expect((await queue.send([header], [20, 1])).len).toBe(21);
    frontend.release();
    frontend.guest.release();
    expect((await done).code).toBe(0);
  });

  it('serves one front-end and exits 0 when it leaves', async () => {
    const socket = join(dir, 'one.sock');
    const child = spawn(process.execPath, [
      bin,
      'vhost-user',
      '--socket',
      socket,
      '--device',
      'blk,backend=memory,size=1M',
      '-v',
    ]);
    const done = exited(child);
    await appears(socket);
    const frontend = TestFrontend.connect(socket);
    await frontend.handshake();
    const queue = await frontend.startQueue(0);
    const header = new Uint8Array(16);
    header[0] = 8; // GET_ID
    expect((await queue.send([header], [20, 1])).len).toBe(21);
    frontend.release();
    frontend.guest.release();
    const { code, stderr } = await done;
    expect(code).toBe(0);
    expect(stderr).toMatch(/<- SET_MEM_TABLE/);
    expect(stderr).toMatch(/device active: split rings, queues 0/);
  });
});
