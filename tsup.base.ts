import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { defineConfig, type Options } from 'tsup';

/**
 * The one build configuration every package uses: ESM with declarations and source maps.
 * `platform: 'neutral'` keeps browser-safe packages (core, devices' pure parts) free of Node
 * built-ins; Node-only packages pass `platform: 'node'`.
 */
export function packageConfig(options: Options = {}) {
  const pkg = JSON.parse(readFileSync(join(process.cwd(), 'package.json'), 'utf8')) as {
    version: string;
  };
  return defineConfig({
    entry: ['src/index.ts'],
    format: ['esm'],
    target: 'es2022',
    platform: 'neutral',
    dts: { compilerOptions: { composite: false, customConditions: [] } },
    sourcemap: true,
    clean: true,
    treeshake: true,
    define: { __PACKAGE_VERSION__: JSON.stringify(pkg.version) },
    ...options,
  });
}
