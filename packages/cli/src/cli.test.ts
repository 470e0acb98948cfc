import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestFrontend } from '@virtkit/vhost-user/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from './cli.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'virtkit-cli-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the CLI in this process, capturing its output. */
async function run(argv: string[], signal?: AbortSignal) {
  const out: string[] = [];
  const err: string[] = [];
  const status = await runCli(argv, {
    out: (line) => out.push(line),
    err: (line) => err.push(line),
    ...(signal ? { signal } : {}),
  });
  return { status, out: out.join('\n'), err: err.join('\n') };
}

describe('virtkit (arguments)', () => {
  it('lists its commands and the device plugins with their options', async () => {
    const { status, out } = await run(['--help']);
    expect(status).toBe(0);
    expect(out).toMatch(/vhost-user +serve one virtio device/);
    expect(out).toMatch(/guest +prepare Linux test guests/);
    expect(out).toMatch(/^ {2}blk - virtio-blk/m);
    expect(out).toMatch(/^ {6}path=VALUE +raw image file/m);
    expect(out).toMatch(/^ {6}readonly=on\|off +refuse writes .*\(default off\)/m);
    expect(out).toMatch(/^ {6}queues=1\.\.16 /m);
    expect(out).toMatch(/^ {2}net - virtio-net/m);
    expect(out).toMatch(/^ {6}tap=VALUE /m);
  });

  it('answers a usage mistake with one line and status 2', async () => {
    const cases: [string[], RegExp][] = [
      [[], /^usage: virtkit <command>/],
      [['frobnicate'], /^virtkit: unknown command 'frobnicate' \(see virtkit --help\)$/],
      [['vhost-user'], /^virtkit vhost-user: --socket PATH is required \(see/],
      [['vhost-user', '--socket', '/tmp/x.sock'], /--device TYPE\[,key=value...\] is required/],
      [['vhost-user', '--socket', '/tmp/x.sock', '--bogus'], /Unknown option '--bogus'/],
      [
        ['vhost-user', '--socket', '/tmp/x.sock', '--fd', '5', '--device', 'blk'],
        /--socket or --fd, not both/,
      ],
      [['vhost-user', '--fd', 'x', '--device', 'blk'], /--fd needs a descriptor number/],
      [
        ['vhost-user', '--socket', '/tmp/x.sock', '--device', 'floppy,path=a.img'],
        /^virtkit vhost-user: unknown device type 'floppy' \(available: blk, console, net\)/,
      ],
      [
        ['vhost-user', '--socket', '/tmp/x.sock', '--device', 'blk,path=a.img,bogus=1'],
        /blk: unknown option 'bogus' \(known options: /,
      ],
      [
        ['vhost-user', '--socket', '/tmp/x.sock', '--device', 'blk'],
        /blk: the file backend needs path=IMAGE/,
      ],
      [
        ['vhost-user', '--socket', '/tmp/x.sock', '--device', 'blk,path=a.img,queues=99'],
        /option 'queues' must be an integer from 1 to 16, got '99'/,
      ],
      [
        ['vhost-user', '--socket', '/tmp/x.sock', '--device', 'net,tap=vk0,socket=/x'],
        /net needs exactly one backend/,
      ],
      [
        [
          'vhost-user',
          '--socket',
          '/tmp/x.sock',
          '--device',
          'blk,path=a.img',
          '--plugin',
          './missing.mjs',
        ],
        /cannot load plugin module '\.\/missing\.mjs'/,
      ],
      [['guest', 'prepare', '--arch', 'mips'], /unknown --arch 'mips'/],
    ];
    for (const [argv, message] of cases) {
      const { status, err } = await run(argv);
      expect({ argv, status }).toEqual({ argv, status: 2 });
      expect(err).toMatch(message);
      if (argv.length > 0) expect(err.split('\n')).toHaveLength(1);
    }
  });

  it('fails with status 1 when the device cannot be created', async () => {
    const { status, err } = await run([
      'vhost-user',
      '--socket',
      join(dir, 'never.sock'),
      '--device',
      `blk,path=${join(dir, 'no-such.img')}`,
    ]);
    expect(status).toBe(1);
    expect(err).toMatch(/^virtkit vhost-user: cannot create the device: .*no-such\.img/);
  });

  it('fails with status 1 for a descriptor that is not a connected socket', async () => {
    const { status, err } = await run([
      'vhost-user',
      '--fd',
      '987',
      '--device',
      'blk,backend=memory,size=1M',
    ]);
    expect(status).toBe(1);
    expect(err).toMatch(/^virtkit vhost-user: cannot serve descriptor 987: /);
  });

  it('loads a third-party plugin module and lists it', async () => {
    const module = join(dir, 'zero-plugin.mjs');
    writeFileSync(
      module,
      `export const zeroPlugin = {
  meta: { name: 'zero', version: '1.0.0', core: '^0.1.0' },
  deviceType: 4,
  description: 'answers every request with zeros',
  options: { fill: { type: 'integer', description: 'byte value to fill with', default: 0 } },
  create: (options) => {
    let context;
    return {
      deviceType: 4,
      features: 1n << 29n,
      queues: [{ maxSize: 64 }],
      activate(ctx) { context = ctx; },
      queueNotify(index) {
        const queue = context.queues[index];
        do {
          queue.disableNotifications();
          for (let chain = queue.pop(); chain; chain = queue.pop()) {
            const bytes = new Uint8Array(chain.writableLength).fill(options.fill);
            chain.writer().write(bytes);
            queue.addUsed(chain, bytes.length);
          }
          if (queue.publishUsed()) context.signalUsed(index);
        } while (queue.enableNotifications());
      },
      reset() { context = undefined; },
    };
  },
};
`,
    );
    const help = await run(['vhost-user', '--help', '--plugin', module]);
    expect(help.status).toBe(0);
    expect(help.out).toMatch(/^ {2}zero - answers every request with zeros$/m);
    expect(help.out).toMatch(/^ {6}fill=N +byte value to fill with \(default 0\)$/m);

    // And serves it.
    const socket = join(dir, 'zero.sock');
    const serving = run([
      'vhost-user',
      '--socket',
      socket,
      '--device',
      'zero,fill=7',
      '--plugin',
      module,
      '-q',
    ]);
    await waitFor(socket);
    const frontend = TestFrontend.connect(socket);
    await frontend.handshake();
    const queue = await frontend.startQueue(0);
    expect([...(await queue.send([], [4])).written]).toEqual([7, 7, 7, 7]);
    frontend.release();
    frontend.guest.release();
    expect((await serving).status).toBe(0);
  });
});

async function waitFor(path: string): Promise<void> {
  const { existsSync } = await import('node:fs');
  const deadline = Date.now() + 5000;
  while (!existsSync(path)) {
    if (Date.now() > deadline) throw new Error(`${path} did not appear`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('virtkit vhost-user (serving)', () => {
  const blkRequest = (type: number, sector: number) => {
    const bytes = new Uint8Array(16);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, type, true);
    view.setBigUint64(8, BigInt(sector), true);
    return bytes;
  };

  it('serves a disk until the front-end goes away, then exits 0', async () => {
    const image = join(dir, 'disk.img');
    writeFileSync(image, Buffer.alloc(1 << 20));
    const socket = join(dir, 'blk.sock');
    const serving = run([
      'vhost-user',
      '--socket',
      socket,
      '--device',
      `blk,path=${image},serial=cli-disk`,
    ]);
    await waitFor(socket);
    const frontend = TestFrontend.connect(socket);
    await frontend.handshake();
    const queue = await frontend.startQueue(0);
    const data = new Uint8Array(512).fill(0x5a);
    expect([...(await queue.send([blkRequest(1, 3), data], [1])).written]).toEqual([0]);
    const read = await queue.send([blkRequest(0, 3)], [512, 1]);
    expect(read.written.subarray(0, 512)).toEqual(data);
    frontend.release();
    frontend.guest.release();
    const result = await serving;
    expect(result.status).toBe(0);
    expect(result.err).toMatch(/virtkit: serving blk on .*blk\.sock/);
    expect(result.err).toMatch(/virtkit: stopping: front-end disconnected/);
    const { readFileSync, existsSync } = await import('node:fs');
    expect(readFileSync(image).subarray(3 * 512, 4 * 512)).toEqual(Buffer.from(data));
    expect(existsSync(socket)).toBe(false);
  });

  it('with --keep-serving waits for the next front-end, until stopped', async () => {
    const socket = join(dir, 'keep.sock');
    const stop = new AbortController();
    const serving = run(
      [
        'vhost-user',
        '--socket',
        socket,
        '--device',
        'blk,backend=memory,size=1M',
        '--keep-serving',
      ],
      stop.signal,
    );
    await waitFor(socket);
    for (let round = 0; round < 2; round++) {
      const frontend = TestFrontend.connect(socket);
      await frontend.handshake();
      const queue = await frontend.startQueue(0);
      expect((await queue.send([blkRequest(8, 0)], [20, 1])).len).toBe(21);
      frontend.release();
      frontend.guest.release();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    stop.abort();
    const result = await serving;
    expect(result.status).toBe(0);
    expect(result.err.match(/waiting for the next front-end/g)).toHaveLength(2);
  });
});
