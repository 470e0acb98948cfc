import { DeviceStatus, featureBit } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { describe, expect, it } from 'vitest';
import { ConsoleConfig, ConsoleFeature, ControlEvent, NO_PORT_ID } from './constants.js';
import { ConsoleDevice } from './device.js';
import {
  GuestConsole,
  MemoryBackend,
  RING_VARIANTS,
  type RingVariant,
  tick,
  variantName,
} from './test-support.js';

const variants = RING_VARIANTS.map((variant) => [variantName(variant), variant] as const);
const NO_MULTIPORT = (1n << 64n) - 1n - featureBit(ConsoleFeature.MULTIPORT);

describe.each(variants)('single-port console over %s', (_name, variant: RingVariant) => {
  it('console output reaches the backend, and the buffers come back with nothing written', async () => {
    const backend = new MemoryBackend();
    const guest = await GuestConsole.create(new ConsoleDevice({ backend }), variant);
    await guest.write(0, 'Linux version 6.1\n');
    const reply = await guest.driver.send(1, { readable: [new TextEncoder().encode('login: ')] });
    expect(reply.len).toBe(0);
    expect(backend.text()).toBe('Linux version 6.1\nlogin: ');
    expect(guest.violations).toBe(0);
  });

  it('input reaches the guest only when it has posted receive buffers', async () => {
    const backend = new MemoryBackend();
    const device = new ConsoleDevice({ backend });
    const guest = await GuestConsole.create(device, variant);
    expect(backend.flowing).toBe(true); // the guest is up: the port asks for input
    backend.type('root\n');
    expect(backend.flowing).toBe(false); // no buffers yet: input paused, one chunk held
    expect(await guest.takeReceived(0)).toBe('');
    guest.postReceive(0, 2, 4);
    expect(await guest.takeReceived(0)).toBe('root\n'); // 4 bytes in one buffer, 1 in the next
    expect(backend.flowing).toBe(true);
    backend.type('ls\n');
    expect(backend.flowing).toBe(false);
    guest.postReceive(0, 1, 64);
    expect(await guest.takeReceived(0)).toBe('ls\n');
    expect(guest.violations).toBe(0);
  });

  it('stops taking output while the backend is full and resumes when it drains', async () => {
    const backend = new MemoryBackend();
    backend.limit = 10;
    const guest = await GuestConsole.create(new ConsoleDevice({ backend }), variant);
    const tokens = ['aaaaaaaa', 'bbbbbbbb', 'cccccccc'].map((text) => guest.postWrite(0, text));
    expect(guest.collectWritten(0)).toEqual(tokens.slice(0, 2)); // the third waits in the ring
    expect(backend.text()).toBe('aaaaaaaabbbbbbbb');
    backend.drain();
    expect(guest.collectWritten(0)).toEqual([tokens[2]]);
    expect(backend.text()).toBe('aaaaaaaabbbbbbbbcccccccc');
  });

  it('drops and counts output while the host side is closed', async () => {
    const backend = new MemoryBackend();
    const device = new ConsoleDevice({ backend });
    const guest = await GuestConsole.create(device, variant);
    backend.setConnected(false);
    await guest.write(0, 'nobody listens');
    expect(device.port(0)!.stats.outputDropped).toBe(14);
    backend.setConnected(true);
    await guest.write(0, 'hi');
    expect(backend.text()).toBe('hi');
    expect(device.port(0)!.stats).toMatchObject({ bytesFromGuest: 2, outputDropped: 14 });
  });
});

describe('single-port console', () => {
  it('splits input over buffers and keeps the rest for the next ones', async () => {
    const backend = new MemoryBackend();
    const device = new ConsoleDevice({ backend });
    const guest = await GuestConsole.create(device);
    guest.postReceive(0, 2, 4);
    backend.type('0123456789');
    expect(await guest.takeReceived(0)).toBe('01234567');
    expect(backend.flowing).toBe(false);
    guest.postReceive(0, 1, 64);
    expect(await guest.takeReceived(0)).toBe('89');
    expect(backend.flowing).toBe(true);
    expect(device.port(0)!.stats.bytesToGuest).toBe(10);
  });

  it('offers SIZE, EMERG_WRITE and the ring features, and no MULTIPORT for one port', () => {
    const device = new ConsoleDevice({ backend: new MemoryBackend() });
    for (const bit of [ConsoleFeature.SIZE, ConsoleFeature.EMERG_WRITE, 28, 29, 34]) {
      expect(device.features & featureBit(bit)).not.toBe(0n);
    }
    expect(device.features & featureBit(ConsoleFeature.MULTIPORT)).toBe(0n);
    expect(device.queues).toHaveLength(2);
    expect(device.config.getU32(ConsoleConfig.MAX_NR_PORTS)).toBe(1);
  });

  it('puts the terminal size in the config space and makes the driver read it', async () => {
    const backend = new MemoryBackend({ size: { cols: 100, rows: 30 } });
    const device = new ConsoleDevice({ backend });
    const guest = await GuestConsole.create(device);
    const config = guest.driver.readConfig(0, 4);
    expect(new DataView(config.buffer).getUint16(0, true)).toBe(100);
    expect(new DataView(config.buffer).getUint16(2, true)).toBe(30);
    // Linux 6.1 reads cols/rows only on a config change interrupt (6.12.117 also once at probe):
    // activation must raise one.
    expect(guest.driver.interrupt.config).toBeGreaterThan(0);
    const before = guest.driver.interrupt.config;
    backend.resize({ cols: 80, rows: 25 });
    expect(guest.driver.interrupt.config).toBe(before + 1);
    expect([...guest.driver.readConfig(0, 4)]).toEqual([80, 0, 25, 0]);
  });

  it('sends an emergency write to port 0 even before the driver set anything up', async () => {
    const backend = new MemoryBackend();
    const device = new ConsoleDevice({ backend });
    const driver = await TestDriver.create(device, { deferDriverOk: true });
    await driver.controller.writeStatus(0);
    driver.controller.writeConfig(ConsoleConfig.EMERG_WR, Uint8Array.of(0x21, 0, 0, 0));
    driver.controller.writeConfig(ConsoleConfig.EMERG_WR, Uint8Array.of(0x0a));
    expect(backend.text()).toBe('!\n');
    expect([...driver.readConfig(ConsoleConfig.EMERG_WR, 4)]).toEqual([0, 0, 0, 0]); // write-only
    expect(device.stats.emergencyWrites).toBe(2);
    // Only the low byte counts: a write to the upper bytes alone outputs nothing.
    driver.controller.writeConfig(ConsoleConfig.EMERG_WR + 1, Uint8Array.of(0x41));
    expect(backend.text()).toBe('!\n');
    expect(driver.controller.violations.count()).toBe(0);
  });

  it('drops an emergency write while the backend is full, counting it', () => {
    const backend = new MemoryBackend();
    backend.limit = 1;
    const device = new ConsoleDevice({ backend });
    device.config.write(ConsoleConfig.EMERG_WR, Uint8Array.of(0x41));
    device.config.write(ConsoleConfig.EMERG_WR, Uint8Array.of(0x42));
    expect(backend.text()).toBe('A');
    expect(device.port(0)!.stats.outputDropped).toBe(1);
  });

  it('keeps input across a reset and tells the port the guest closed it', async () => {
    const backend = new MemoryBackend();
    const device = new ConsoleDevice({ backend });
    const events: string[] = [];
    device.port(0)!.on('guest-open', () => events.push('open'));
    device.port(0)!.on('guest-close', () => events.push('close'));
    const guest = await GuestConsole.create(device);
    backend.type('typed before reboot');
    await guest.driver.reset();
    expect(backend.flowing).toBe(false);
    await guest.driver.initialize();
    guest.postReceive(0, 1, 64);
    expect(await guest.takeReceived(0)).toBe('typed before reboot');
    expect(events).toEqual(['open', 'close', 'open']);
    expect(device.port(0)!.stats.inputDropped).toBe(0);
  });

  it('finishes a transmit chain held back at reset without touching the reset ring', async () => {
    const backend = new MemoryBackend();
    backend.limit = 4;
    const device = new ConsoleDevice({ backend });
    const guest = await GuestConsole.create(device);
    guest.postWrite(0, 'abcd'); // fills the backend
    guest.postWrite(0, 'efgh'); // waits
    await guest.driver.reset();
    backend.drain(); // a late drain must not process the reset ring
    expect(backend.text()).toBe('abcd');
    await guest.driver.initialize();
    await guest.write(0, 'after');
    expect(backend.text()).toBe('abcdafter');
  });
});

describe.each(variants)('multiport console over %s', (_name, variant: RingVariant) => {
  async function setup() {
    const console0 = new MemoryBackend({ size: { cols: 120, rows: 40 } });
    const agent = new MemoryBackend();
    const device = new ConsoleDevice({
      backend: console0,
      ports: [{ name: 'org.example.agent', backend: agent }],
      maxPorts: 4,
    });
    const guest = await GuestConsole.create(device, variant);
    await guest.probe();
    return { console0, agent, device, guest };
  }

  it('DEVICE_READY → DEVICE_ADD per port → PORT_READY → CONSOLE_PORT, RESIZE, PORT_NAME, PORT_OPEN', async () => {
    const { guest, device } = await setup();
    const summary = guest.received.map((m) => [m.id, m.event, m.value]);
    expect(summary).toEqual([
      [0, ControlEvent.DEVICE_ADD, 1],
      [1, ControlEvent.DEVICE_ADD, 1],
      [0, ControlEvent.CONSOLE_PORT, 1],
      [0, ControlEvent.RESIZE, 0],
      [0, ControlEvent.PORT_OPEN, 1],
      [1, ControlEvent.PORT_NAME, 1],
      [1, ControlEvent.PORT_OPEN, 1],
    ]);
    expect(guest.ports.get(0)).toMatchObject({
      console: true,
      hostConnected: true,
      size: { cols: 120, rows: 40 },
    });
    expect(guest.ports.get(1)).toMatchObject({ console: false, name: 'org.example.agent' });
    expect(device.port(0)!.guestOpen).toBe(true); // Linux opened the console itself
    expect(device.port(1)!.guestOpen).toBe(false);
    expect(device.port(1)!.ready).toBe(true);
    expect(guest.violations).toBe(0);
  });

  it('reports the guest opening and closing a port, and the host side both ways', async () => {
    const { guest, device, agent } = await setup();
    const events: string[] = [];
    device.port(1)!.on('guest-open', () => events.push('open'));
    device.port(1)!.on('guest-close', () => events.push('close'));
    await guest.open(1);
    await guest.open(1, false);
    expect(events).toEqual(['open', 'close']);
    expect(agent.guestOpens).toEqual([true, false]);
    agent.setConnected(false);
    await guest.settle();
    expect(guest.ports.get(1)!.hostConnected).toBe(false);
    agent.setConnected(true);
    await guest.settle();
    expect(guest.ports.get(1)!.hostConnected).toBe(true);
  });

  it("keeps a named port's data apart from port 0, and its input waits until the guest opens it", async () => {
    const { guest, console0, agent } = await setup();
    await guest.write(1, '{"execute":"ping"}');
    await guest.write(0, 'console text');
    expect(agent.text()).toBe('{"execute":"ping"}');
    expect(console0.text()).toBe('console text');
    expect(agent.flowing).toBe(false); // not opened by the guest: nothing is read from the host
    await guest.open(1);
    expect(agent.flowing).toBe(true);
    agent.type('{"return":{}}');
    console0.type('$ ');
    expect(await guest.takeReceived(1)).toBe('{"return":{}}');
    expect(await guest.takeReceived(0)).toBe('$ ');
  });

  it('sends RESIZE for a console port when its terminal changes size', async () => {
    const { guest, console0 } = await setup();
    console0.resize({ cols: 200, rows: 60 });
    await guest.settle();
    expect(guest.ports.get(0)!.size).toEqual({ cols: 200, rows: 60 });
  });

  it('adds and removes ports while the guest runs', async () => {
    const { guest, device } = await setup();
    const serial = new MemoryBackend();
    const port = device.addPort({ name: 'serial-2', backend: serial, console: true });
    expect(port.id).toBe(2);
    await guest.settle();
    expect(guest.ports.get(2)).toMatchObject({ name: 'serial-2', console: true });
    expect(port.guestOpen).toBe(true);
    await guest.write(2, 'hvc1 output');
    expect(serial.text()).toBe('hvc1 output');
    const removed: number[] = [];
    port.on('removed', () => removed.push(port.id));
    await device.removePort(2);
    await guest.settle();
    expect(guest.ports.get(2)!.removed).toBe(true);
    expect(serial.closed).toBe(true);
    expect(removed).toEqual([2]);
    expect(device.port(2)).toBeUndefined();
    // A write the guest had queued before it saw the removal is discarded, not a violation.
    await guest.write(2, 'late');
    expect(device.stats.orphanBytes).toBe(4);
    expect(guest.violations).toBe(0);
  });
});

describe('multiport console', () => {
  it('counts control messages for ports that were never announced, and keeps going', async () => {
    const device = new ConsoleDevice({ backend: new MemoryBackend(), maxPorts: 4 });
    const guest = await GuestConsole.create(device);
    await guest.probe();
    await guest.sendControl(3, ControlEvent.PORT_READY, 1);
    await guest.sendControl(9, ControlEvent.PORT_OPEN, 1);
    await guest.sendControl(0, ControlEvent.RESIZE, 0);
    await guest.sendControl(0, 42, 0);
    await guest.driver.send(3, { readable: [Uint8Array.of(1, 2, 3)] });
    const counts = guest.driver.controller.violations.toJSON();
    expect(counts).toEqual({
      CONSOLE_PORT_UNKNOWN: 2,
      CONSOLE_CONTROL_EVENT: 2,
      CONSOLE_CONTROL_SHORT: 1,
    });
    expect(guest.driver.status & DeviceStatus.DEVICE_NEEDS_RESET).toBe(0);
    await guest.write(0, 'still fine');
  });

  it('holds control messages until the driver posts control buffers', async () => {
    const device = new ConsoleDevice({ backend: new MemoryBackend(), maxPorts: 2 });
    const guest = await GuestConsole.create(device);
    await guest.sendControl(NO_PORT_ID, ControlEvent.DEVICE_READY, 1);
    expect(await guest.takeControl()).toEqual([]);
    guest.postBuffers(2, 4, 4096);
    const messages = await guest.takeControl();
    expect(messages.map((m) => m.event)).toEqual([ControlEvent.DEVICE_ADD]);
  });

  it('refuses a too-short control buffer but delivers the message in the next one', async () => {
    const device = new ConsoleDevice({ backend: new MemoryBackend(), maxPorts: 2 });
    const guest = await GuestConsole.create(device);
    guest.postBuffers(2, 1, 4);
    guest.postBuffers(2, 1, 64);
    await guest.sendControl(NO_PORT_ID, ControlEvent.DEVICE_READY, 1);
    const messages = await guest.takeControl();
    expect(messages.map((m) => m.event)).toContain(ControlEvent.DEVICE_ADD);
    expect(guest.driver.controller.violations.count('CONSOLE_BUFFER_SHORT')).toBe(1);
  });

  it('sends RESIZE as le16 cols, le16 rows by default, as Debian 6.1.192 and 6.12.117 read it', async () => {
    const backend = new MemoryBackend({ size: { cols: 132, rows: 43 } });
    const device = new ConsoleDevice({ backend, maxPorts: 2 });
    const guest = await GuestConsole.create(device);
    await guest.probe();
    const resize = guest.received.find((m) => m.event === ControlEvent.RESIZE);
    // Literal bytes, independent of the harness's decoding: cols 132 first, then rows 43.
    expect(resize && [...resize.payload]).toEqual([132, 0, 43, 0]);
    expect(guest.ports.get(0)!.size).toEqual({ cols: 132, rows: 43 });
  });

  it('puts rows first for older Linux guests when asked to', async () => {
    const backend = new MemoryBackend({ size: { cols: 132, rows: 43 } });
    const device = new ConsoleDevice({ backend, maxPorts: 2, resizeLayout: 'rows-cols' });
    const guest = await GuestConsole.create(device, undefined, { resizeLayout: 'rows-cols' });
    await guest.probe();
    const resize = guest.received.find((m) => m.event === ControlEvent.RESIZE);
    expect(resize && [...resize.payload]).toEqual([43, 0, 132, 0]);
    expect(guest.ports.get(0)!.size).toEqual({ cols: 132, rows: 43 });
  });

  it('sends RESIZE only when SIZE was negotiated', async () => {
    const backend = new MemoryBackend({ size: { cols: 132, rows: 43 } });
    const device = new ConsoleDevice({ backend, maxPorts: 2 });
    const guest = await GuestConsole.create(device, undefined, {
      features: (1n << 64n) - 1n - featureBit(ConsoleFeature.SIZE),
    });
    await guest.probe();
    expect(guest.received.some((m) => m.event === ControlEvent.RESIZE)).toBe(false);
  });

  it('works as a single port when the driver does not take MULTIPORT', async () => {
    const backend = new MemoryBackend();
    const device = new ConsoleDevice({ backend, maxPorts: 4 });
    const guest = await GuestConsole.create(device, undefined, { features: NO_MULTIPORT });
    await guest.write(0, 'legacy');
    expect(backend.text()).toBe('legacy');
    backend.type('x');
    guest.postReceive(0, 1, 8);
    expect(await guest.takeReceived(0)).toBe('x');
  });

  it('announces a port added before the driver is ready when DEVICE_READY comes', async () => {
    const device = new ConsoleDevice({ backend: new MemoryBackend(), maxPorts: 3 });
    const guest = await GuestConsole.create(device);
    device.addPort({ name: 'early', backend: new MemoryBackend() });
    await guest.probe();
    expect(guest.ports.get(1)?.name).toBe('early');
  });

  it('forgets the control state at reset and runs the handshake again', async () => {
    const device = new ConsoleDevice({ backend: new MemoryBackend(), maxPorts: 2 });
    const guest = await GuestConsole.create(device);
    await guest.probe();
    expect(device.port(0)!.ready).toBe(true);
    await guest.driver.reset();
    expect(device.port(0)!.ready).toBe(false);
    await guest.driver.initialize();
    guest.ports.clear();
    await guest.probe();
    expect(guest.ports.get(0)?.console).toBe(true);
    expect(device.port(0)!.guestOpen).toBe(true);
  });

  it('logs DEVICE_READY 0 and PORT_READY 0 (driver failures) without announcing or readying', async () => {
    const logs: string[] = [];
    const device = new ConsoleDevice({
      backend: new MemoryBackend(),
      maxPorts: 2,
      log: (message) => logs.push(message),
    });
    const guest = await GuestConsole.create(device);
    guest.postBuffers(2, 4, 4096);
    await guest.sendControl(NO_PORT_ID, ControlEvent.DEVICE_READY, 0);
    expect(await guest.takeControl()).toEqual([]);
    await guest.sendControl(NO_PORT_ID, ControlEvent.DEVICE_READY, 1);
    expect((await guest.takeControl()).map((m) => m.event)).toEqual([ControlEvent.DEVICE_ADD]);
    await guest.sendControl(0, ControlEvent.PORT_READY, 0);
    expect(await guest.takeControl()).toEqual([]);
    expect(device.port(0)!.ready).toBe(false);
    expect(logs).toEqual([
      'console driver reported that it failed to initialize (DEVICE_READY 0)',
      'console driver failed to add port 0 (PORT_READY 0)',
    ]);
    expect(guest.violations).toBe(0);
  });

  it("drops instead of waiting with overflow: 'drop', and counts it", async () => {
    const backend = new MemoryBackend();
    backend.limit = 4;
    const device = new ConsoleDevice({ backend, overflow: 'drop' });
    const guest = await GuestConsole.create(device);
    const tokens = ['abcd', 'efgh', 'ijkl'].map((t) => guest.postWrite(0, t));
    expect(guest.collectWritten(0)).toEqual(tokens); // nothing waits in the ring
    expect(backend.text()).toBe('abcd');
    expect(device.port(0)!.stats).toMatchObject({ bytesFromGuest: 4, outputDropped: 8 });
    backend.drain();
    await guest.write(0, 'mnop');
    expect(backend.text()).toBe('abcdmnop');
  });

  it('returns output queued on a port removed while its output was blocked, and takes later writes', async () => {
    const agent = new MemoryBackend();
    agent.limit = 4; // the backend takes 4 bytes, then blocks
    const device = new ConsoleDevice({ backend: new MemoryBackend(), ports: [{ backend: agent }] });
    const guest = await GuestConsole.create(device);
    await guest.probe();
    await guest.open(1);
    const queued = ['abcd', 'efgh', 'ijkl'].map((t) => guest.postWrite(1, t));
    expect(agent.text()).toBe('abcd');
    expect(guest.collectWritten(1)).toEqual(queued.slice(0, 1)); // the rest waits in the ring
    await device.removePort(1);
    expect(guest.collectWritten(1)).toEqual(queued.slice(1)); // given back at once
    // Kicks are on again: a write the guest queues before it sees the removal comes back too.
    const late = guest.postWrite(1, 'late');
    expect(guest.collectWritten(1)).toEqual([late]);
    expect(device.stats.orphanBytes).toBe(12); // efgh, ijkl, late
    expect(guest.violations).toBe(0);
  });

  it('drops and counts input still waiting when its port is removed', async () => {
    const agent = new MemoryBackend();
    const device = new ConsoleDevice({ backend: new MemoryBackend(), ports: [{ backend: agent }] });
    const guest = await GuestConsole.create(device);
    await guest.probe();
    const port = device.port(1)!;
    await guest.open(1);
    agent.type('0123456789'); // one of the guest's four 64-byte buffers, returned with 10 bytes
    agent.type('x'.repeat(300)); // 192 bytes fill the other three; 108 wait for more buffers
    expect(port.stats.bytesToGuest).toBe(202);
    await device.removePort(1);
    expect(port.stats.inputDropped).toBe(108);
    expect(port.removed).toBe(true);
  });

  it('logs a port listener that throws instead of failing the queue that raised the event', async () => {
    const logs: string[] = [];
    const device = new ConsoleDevice({
      backend: new MemoryBackend(),
      ports: [{ backend: new MemoryBackend() }],
      log: (message) => logs.push(message),
    });
    device.port(1)!.on('guest-open', () => {
      throw new Error('listener bug');
    });
    const guest = await GuestConsole.create(device);
    await guest.probe();
    await guest.open(1);
    expect(device.port(1)!.guestOpen).toBe(true);
    expect(logs).toEqual(["console port 1: a 'guest-open' listener threw: Error: listener bug"]);
    expect(guest.driver.status & DeviceStatus.DEVICE_NEEDS_RESET).toBe(0);
  });

  it('throws VMM mistakes: ports beyond maxPorts, taken ids, duplicate names, port 0', async () => {
    const device = new ConsoleDevice({ backend: new MemoryBackend(), maxPorts: 2 });
    device.addPort({ backend: new MemoryBackend(), name: 'a' });
    expect(() => device.addPort({ backend: new MemoryBackend() })).toThrow(/all 2 ports/);
    await expect(device.removePort(0)).rejects.toThrow(/port 0 cannot be removed/);
    await expect(device.removePort(5)).rejects.toThrow(/no port 5/);
    const other = new ConsoleDevice({ backend: new MemoryBackend(), maxPorts: 4 });
    expect(() => other.addPort({ backend: new MemoryBackend(), id: 4 })).toThrow(/between 1 and 3/);
    other.addPort({ backend: new MemoryBackend(), name: 'x' });
    expect(() => other.addPort({ backend: new MemoryBackend(), name: 'x' })).toThrow(/two ports/);
    const single = new ConsoleDevice({ backend: new MemoryBackend() });
    expect(() => single.addPort({ backend: new MemoryBackend() })).toThrow(/no MULTIPORT/);
    expect(
      () => new ConsoleDevice({ backend: new MemoryBackend(), multiport: false, name: 'n' }),
    ).toThrow(/need MULTIPORT/);
  });

  it('closes every backend on close and ignores later activity', async () => {
    const console0 = new MemoryBackend();
    const agent = new MemoryBackend();
    const device = new ConsoleDevice({ backend: console0, ports: [{ backend: agent }] });
    const guest = await GuestConsole.create(device);
    await guest.probe();
    await device.close();
    expect([console0.closed, agent.closed]).toEqual([true, true]);
    agent.type('late'); // a backend that still calls in is counted, not crashed on
    expect(device.port(1)).toBeUndefined();
    expect(() => device.addPort({ backend: new MemoryBackend() })).toThrow(/closed/);
    await tick();
  });
});
