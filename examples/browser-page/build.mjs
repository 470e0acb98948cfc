// Bundles the page with esbuild into dist/ (or the directory given as the first argument):
// index.html, main.js (+ source map) and meta.json (esbuild's metafile, which the browser test
// checks for Node built-ins).
// Bundles the workspace packages' TypeScript sources (the `@virtkit/source` export condition),
// so nothing else needs building first.
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = fileURLToPath(new URL('.', import.meta.url));
const dist = resolve(here, process.argv[2] ?? 'dist');
// Core's build bakes its version in; a bundle of its sources has to do the same.
const corePackage = JSON.parse(
  await readFile(fileURLToPath(import.meta.resolve('@virtkit/core/package.json')), 'utf8'),
);

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
const result = await esbuild.build({
  absWorkingDir: here,
  entryPoints: ['src/main.ts'],
  outfile: `${dist}/main.js`,
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: ['es2022'],
  conditions: ['@virtkit/source'],
  define: { __VIRTKIT_CORE_VERSION__: JSON.stringify(corePackage.version) },
  sourcemap: true,
  metafile: true,
  logLevel: 'warning',
});
await writeFile(`${dist}/meta.json`, JSON.stringify(result.metafile, null, 2));
await copyFile(`${here}index.html`, `${dist}/index.html`);
const bundle = relative(here, `${dist}/main.js`);
const bytes = result.metafile.outputs[bundle]?.bytes ?? 0;
console.log(`browser-page: ${bundle} ${(bytes / 1024).toFixed(1)} KiB`);
