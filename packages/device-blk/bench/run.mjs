// Bundles a benchmark from the TypeScript sources (koffi stays external, it is native) and runs
// it. Usage, from packages/device-blk: `node bench/run.mjs [file-io|device|large]` (default: all).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const esbuild = require(require.resolve('esbuild', { paths: [require.resolve('tsup')] }));
const names = process.argv.length > 2 ? process.argv.slice(2) : ['file-io', 'device', 'large'];
for (const name of names) {
  const out = join(mkdtempSync(join(tmpdir(), 'virtkit-blk-bench-')), 'bench.mjs');
  await esbuild.build({
    entryPoints: [new URL(`./${name}.bench.ts`, import.meta.url).pathname],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    conditions: ['@virtkit/source'],
    define: { __VIRTKIT_CORE_VERSION__: '"0.1.0"' },
    plugins: [
      {
        // koffi is native: import it from where @virtkit/linux finds it, by absolute path.
        name: 'koffi-external',
        setup(build) {
          const koffi = require.resolve('koffi', {
            paths: [new URL('../../linux/', import.meta.url).pathname],
          });
          build.onResolve({ filter: /^koffi$/ }, () => ({ path: koffi, external: true }));
        },
      },
    ],
    outfile: out,
    banner: {
      js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
    },
  });
  try {
    execFileSync(
      process.execPath,
      [...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean), out],
      { stdio: 'inherit', cwd: process.cwd() },
    );
  } finally {
    rmSync(out, { force: true });
  }
}
