import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConsoleConfig } from '../constants.js';
import { ConsoleDevice } from '../device.js';
import { ConsoleError } from '../errors.js';
import { GuestConsole } from '../test-support.js';
import { FileBackend } from './file.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'virtkit-console-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('FileBackend', () => {
  it('appends guest output (and emergency writes) to the file', async () => {
    const path = join(dir, 'guest.log');
    await writeFile(path, 'previous boot\n');
    const backend = await FileBackend.open(path);
    const device = new ConsoleDevice({ backend });
    const guest = await GuestConsole.create(device);
    await guest.write(0, 'booting\n');
    device.config.write(ConsoleConfig.EMERG_WR, Uint8Array.of(0x21));
    await guest.write(0, '\nlogin: ');
    await device.close();
    expect(await readFile(path, 'utf8')).toBe('previous boot\nbooting\n!\nlogin: ');
    expect(backend.bytesWritten).toBe(17);
  });

  it('truncates when asked to, and gives the guest no input', async () => {
    const path = join(dir, 'guest.log');
    await writeFile(path, 'old');
    const device = new ConsoleDevice({ backend: await FileBackend.open(path, { truncate: true }) });
    const guest = await GuestConsole.create(device);
    guest.postReceive(0, 1, 16);
    await guest.write(0, 'new');
    expect(await guest.takeReceived(0)).toBe('');
    await device.close();
    expect(await readFile(path, 'utf8')).toBe('new');
  });

  it('fails to open a path it cannot write with a CONSOLE_BACKEND error', async () => {
    const error = await FileBackend.open(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConsoleError);
    expect(error).toMatchObject({ code: 'CONSOLE_BACKEND' });
    expect((error as Error).message).toMatch(/cannot open console log/);
  });
});
