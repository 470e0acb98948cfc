// Interoperability with QEMU's own `-netdev stream` (QEMU 7.2+): QEMU connects to two of our
// stream servers and joins them with a hub, so a frame one device transmits comes back to the
// other through QEMU's framing code. Skipped (and says so) where qemu-system-x86_64 is missing.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestDriver } from '@virtkit/core/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { NetDevice } from '../device.js';
import { accept, ethernet, header, PEER_MAC, until } from '../test-support.js';
import { StreamBackend } from './stream.js';

const QEMU = 'qemu-system-x86_64';

function probe(): string | undefined {
  try {
    const help = execFileSync(QEMU, ['-netdev', 'help'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return help.includes('stream') ? undefined : `${QEMU} has no -netdev stream (needs QEMU 7.2+)`;
  } catch {
    return `${QEMU} is not installed`;
  }
}

const unavailable = probe();
if (unavailable) console.warn(`device-net QEMU interop test skipped: ${unavailable}`);

const directory = mkdtempSync(join(tmpdir(), 'virtkit-net-qemu-'));
afterAll(() => rmSync(directory, { recursive: true, force: true }));

describe.skipIf(unavailable !== undefined)('stream backend against QEMU -netdev stream', () => {
  it('exchanges frames through a QEMU hub in both directions', async () => {
    const paths = ['a.sock', 'b.sock'].map((name) => join(directory, name));
    const ends = await Promise.all(
      paths.map(async (path) => {
        const backend = await StreamBackend.open({ address: path, listen: true });
        const device = new NetDevice({ backend });
        const driver = await TestDriver.create(device, { features: accept(device.features) });
        return { device, driver };
      }),
    );
    let qemu: ChildProcess | undefined;
    try {
      qemu = spawn(
        QEMU,
        [
          // Not -S: QEMU forwards packets only while the machine runs.
          '-machine',
          'none',
          '-nodefaults',
          '-display',
          'none',
          ...paths.flatMap((path, i) => [
            '-netdev',
            `stream,id=s${i},server=off,addr.type=unix,addr.path=${path}`,
            '-netdev',
            `hubport,id=h${i},hubid=0,netdev=s${i}`,
          ]),
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let errors = '';
      qemu.stderr!.on('data', (chunk: Buffer) => {
        errors += chunk.toString();
      });
      await until(() => ends.every((end) => end.device.linkUp), 5000, `QEMU connected (${errors})`);
      const [a, b] = ends as [(typeof ends)[number], (typeof ends)[number]];
      for (const [from, to] of [
        [a, b],
        [b, a],
      ] as const) {
        const token = to.driver.post(0, { writable: [1526] }).token;
        to.driver.kick(0, true);
        const frame = ethernet({ dst: PEER_MAC, payloadLength: 1000 });
        await from.driver.send(1, { readable: [header(), frame] });
        expect((await to.driver.wait(0, token)).written.subarray(12)).toEqual(frame);
      }
    } finally {
      if (qemu && qemu.exitCode === null) {
        const exited = new Promise((resolve) => qemu!.once('exit', resolve));
        qemu.kill();
        await exited;
      }
      for (const end of ends) await end.device.close();
    }
  }, 20_000);
});
