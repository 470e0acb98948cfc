import { join } from 'node:path';
import {
  ConsoleDevice,
  type PortBackend,
  SocketBackend,
  StdioBackend,
} from '@virtkit/device-console';

/**
 * hvc0 on the VMM's terminal, plus a named port for a guest agent on a Unix socket: the guest
 * sees /dev/vport0p1 (and /dev/virtio-ports/org.example.agent with udev); whoever connects to
 * agent.sock talks to the program that opens it.
 */
export async function createAgentConsole(
  runDir: string,
  log: (message: string) => void = console.log,
  terminal: PortBackend = new StdioBackend(),
): Promise<ConsoleDevice> {
  const device = new ConsoleDevice({ backend: terminal, maxPorts: 4, log });
  const agent = device.addPort({
    name: 'org.example.agent',
    backend: await SocketBackend.listen(join(runDir, 'agent.sock')),
  });
  agent.on('guest-open', () => log('the guest opened the agent port'));
  agent.on('guest-close', () => log('the guest closed the agent port'));
  return device; // hand it to a transport; `await device.close()` at shutdown restores the terminal
}
