import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Options } from 'tsup';

/**
 * The one build configuration every package uses: ESM with declarations and source maps.
 * `platform: 'neutral'` keeps browser-safe packages (core, devices' pure parts) free of Node
 * built-ins; Node-only packages pass `platform: 'node'`.
 */
export function packageConfig(options: Options = {}) {
  const core = JSON.parse(
    readFileSync(fileURLToPath(new URL('./packages/core/package.json', import.meta.url)), 'utf8'),
  ) as { version: string };
  return defineConfig({
    entry: ['src/index.ts'],
    format: ['esm'],
    target: 'es2022',
    platform: 'neutral',
    dts: { compilerOptions: { composite: false, customConditions: [] } },
    sourcemap: true,
    clean: true,
    treeshake: true,
    define: { __VIRTKIT_CORE_VERSION__: JSON.stringify(core.version) },
    ...options,
  });
}
