// The main job until the VMM exists (pnpm start): run the example virtio-rng plugin through the harness, the
// way Linux would drive it, and print what happens. Uses the built packages (pnpm build).
import { DeviceRegistry } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { rngPlugin } from '@virtkit-examples/rng-device';

const registry = new DeviceRegistry();
registry.register(rngPlugin);
console.log(`registered device plugins: ${registry.names().join(', ')}`);
for (const layout of ['split', 'packed']) {
  const device = await registry.create('rng', { maxBytes: 32 });
  const driver = await TestDriver.create(device, { layout });
  console.log(
    `${layout} ring: device status 0x${driver.status.toString(16)}, features 0x${driver.controller.negotiatedFeatures.toString(16)}`,
  );
  const { len, written } = await driver.send(0, { writable: [64] });
  console.log(`  asked for 64 bytes, got ${len}: ${Buffer.from(written).toString('hex')}`);
  console.log(`  protocol violations: ${driver.controller.violations.count()}`);
}
