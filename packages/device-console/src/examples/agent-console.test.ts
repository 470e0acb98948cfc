import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GuestConsole, MemoryBackend, until } from '../test-support.js';
import { createAgentConsole } from './agent-console.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'virtkit-console-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('README example (src/examples/agent-console.ts)', () => {
  it('is the code the README shows', async () => {
    const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8');
    const marker = '<!-- example: src/examples/agent-console.ts -->';
    const start = readme.indexOf(marker);
    expect(start, 'README marker present').toBeGreaterThan(-1);
    const block = /```ts\n([\s\S]*?)```/.exec(readme.slice(start))?.[1];
    expect(block).toBe(await readFile(new URL('./agent-console.ts', import.meta.url), 'utf8'));
  });

  it('gives the guest a console and a named agent port on a socket', async () => {
    const logs: string[] = [];
    const terminal = new MemoryBackend();
    const device = await createAgentConsole(dir, (m) => logs.push(m), terminal);
    const guest = await GuestConsole.create(device);
    await guest.probe();
    expect(guest.ports.get(0)?.console).toBe(true);
    expect(guest.ports.get(1)).toMatchObject({ name: 'org.example.agent', hostConnected: false });

    const client = connect(join(dir, 'agent.sock'));
    const received: Buffer[] = [];
    client.on('data', (chunk: Buffer) => received.push(chunk));
    await until(() => device.port(1)!.hostConnected, 'the agent client');
    await guest.settle();
    expect(guest.ports.get(1)!.hostConnected).toBe(true);

    await guest.open(1);
    expect(logs).toEqual(['the guest opened the agent port']);
    await guest.write(1, '{"hello":"host"}');
    await until(() => Buffer.concat(received).toString() === '{"hello":"host"}', 'agent output');
    client.write('{"hello":"guest"}');
    await until(() => device.port(1)!.stats.bytesToGuest === 17, 'agent input');
    expect(await guest.takeReceived(1)).toBe('{"hello":"guest"}');
    await guest.write(0, 'console');
    expect(terminal.text()).toBe('console');

    client.destroy();
    await device.close();
  });
});
