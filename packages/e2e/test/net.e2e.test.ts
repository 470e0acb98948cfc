/**
 * Networking in a real Linux guest: the guest's virtio-net talks to a TAP interface in a network
 * namespace made by the test (nothing reaches the machine's own interfaces). The guest pings the
 * host and moves 8 MiB each way over TCP; both ends compare sha256 digests.
 *
 * Runs against our vhost-user net (TAP backend) and, as the control, QEMU's built-in virtio-net
 * on the same kind of TAP with vhost=off.
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attachNet, NET_SERVER_NAMES } from '../src/attach.js';
import { outputTail } from '../src/errors.js';
import { prepareX86Guest, scriptInitramfs } from '../src/guest.js';
import { NetworkNamespace } from '../src/netns.js';
import { TcpPeer } from '../src/peer.js';
import { runGuestVm } from '../src/qemu.js';
import { checkNetRun, NET_LAYOUT, netScript } from '../src/scenarios/net.js';
import { guestSkipReason, netnsSkipReason, reportSkip, virtkitSkipReason } from '../src/skip.js';

const RUN_TIMEOUT_MS = 120_000;
const TEST_TIMEOUT_MS = 150_000;

const skip = (await guestSkipReason()) ?? netnsSkipReason();
reportSkip('network guest tests', skip);
const virtkitSkip = virtkitSkipReason();
if (skip === undefined) reportSkip(NET_SERVER_NAMES.virtkit, virtkitSkip);

describe.skipIf(skip !== undefined)('network devices in a Linux guest', () => {
  let kernel: string;
  let initrd: string;
  let work: string;

  beforeAll(async () => {
    kernel = (await prepareX86Guest()).kernel;
    initrd = await scriptInitramfs(netScript());
    work = mkdtempSync(join(tmpdir(), 'virtkit-e2e-net-'));
  }, 600_000);

  afterAll(() => {
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const cases = [
    { server: 'virtkit', queues: 1 },
    { server: 'builtin', queues: 1 },
    // Two queue pairs on two vCPUs: QEMU enables the second pair's rings only once the guest
    // turns it on through the control queue, and the device must then run on all four rings.
    { server: 'virtkit', queues: 2 },
  ] as const;
  for (const { server, queues } of cases) {
    it.skipIf(server === 'virtkit' && virtkitSkip !== undefined)(
      `${NET_SERVER_NAMES[server]}${queues > 1 ? `, ${queues} queue pairs on ${queues} vCPUs` : ''}: ping, and 8 MiB each way over TCP with matching sha256`,
      async () => {
        const L = NET_LAYOUT;
        const netns = await NetworkNamespace.create();
        let peer: TcpPeer | undefined;
        let nic: Awaited<ReturnType<typeof attachNet>> | undefined;
        try {
          const tap = await netns.addTap({
            address: `${L.hostAddress}/${L.prefix}`,
            ...(queues > 1 ? { multiQueue: true } : {}),
          });
          peer = await TcpPeer.start({
            netns: netns.name,
            host: L.hostAddress,
            sendPort: L.downloadPort,
            sendBytes: L.downloadBytes,
            receivePort: L.uploadPort,
            receiveBytes: L.uploadBytes,
          });
          nic = await attachNet(server, {
            netns: netns.name,
            tap,
            socketDir: mkdtempSync(join(work, `${server}-`)),
            ...(queues > 1 ? { queues } : {}),
          });
          const run = await runGuestVm({
            kernel,
            initrd,
            cpus: queues,
            net: [nic.attachment],
            ...(nic.qemuNetns !== undefined ? { netns: nic.qemuNetns } : {}),
            timeoutMs: RUN_TIMEOUT_MS,
          });
          const reports = peer.reports();
          const backendLog = nic.backend
            ? `\nbackend:\n${outputTail(nic.backend.process.output)}`
            : '';
          const context = `${outputTail(run.output, 60)}\npeer:\n${outputTail(peer.process.output, 10)}${backendLog}`;
          expect(run.timedOut, context).toBe(false);
          expect(
            checkNetRun(
              run.output,
              reports.find((report) => report.event === 'sent'),
              reports.find((report) => report.event === 'received'),
            ),
            context,
          ).toEqual([]);
          expect(peer.errors(), context).toEqual([]);
          expect(run.qemuStatus, context).toBe(0);
          if (queues > 1) {
            // The device ran on every data ring: rx/tx of both pairs (QEMU serves the control queue).
            expect(nic.backend!.process.output, context).toMatch(
              /device active: \w+ rings, queues 0, 1, 2, 3,/,
            );
          }
          if (nic.backend) {
            // Ours ends when its front-end goes away (QEMU exited): cleanly, status 0.
            const end = await nic.backend.process.wait(10_000);
            expect(end.code, outputTail(nic.backend.process.output)).toBe(0);
          }
        } finally {
          await nic?.close();
          await peer?.stop();
          netns.destroy();
        }
      },
      TEST_TIMEOUT_MS,
    );
  }
});
