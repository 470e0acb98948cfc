import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

/** Resolve workspace packages to their TypeScript sources (the `@virtkit/source` export condition). */
const conditions = ['@virtkit/source', 'module', 'node', 'development|production'];

/** Core states its own version to plugins it checks; tests see the same value a build bakes in. */
const coreVersion = (
  JSON.parse(readFileSync('packages/core/package.json', 'utf8')) as { version: string }
).version;

/** One vitest project per workspace package that has tests beside its code. */
const projects = ['packages', 'examples'].flatMap((group) =>
  existsSync(group)
    ? readdirSync(group, { withFileTypes: true })
        .filter(
          (entry) => entry.isDirectory() && existsSync(join(group, entry.name, 'package.json')),
        )
        .map((entry) => {
          const root = join(group, entry.name);
          return {
            resolve: { conditions },
            ssr: { resolve: { conditions, externalConditions: conditions } },
            define: { __VIRTKIT_CORE_VERSION__: JSON.stringify(coreVersion) },
            test: {
              name: entry.name,
              root,
              include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
              passWithNoTests: true,
              // Real-guest tests boot QEMU under software emulation on a shared 2-core machine:
              // one retry absorbs a scheduling hiccup; a real bug fails both attempts.
              ...(entry.name === 'e2e' ? { retry: 1 } : {}),
            },
          };
        })
    : [],
);

export default defineConfig({
  test: {
    projects,
    // Real-guest tests live in their own project and opt in to longer timeouts themselves.
    testTimeout: 20_000,
  },
});
