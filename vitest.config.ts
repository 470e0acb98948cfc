import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

/** Resolve workspace packages to their TypeScript sources (the `@virtkit/source` export condition). */
const conditions = ['@virtkit/source', 'module', 'node', 'development|production'];

function packageVersion(dir: string): string {
  return (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version: string })
    .version;
}

/** One vitest project per workspace package that has tests beside its code. */
const projects = ['packages', 'examples'].flatMap((group) =>
  existsSync(group)
    ? readdirSync(group, { withFileTypes: true })
        .filter((entry) => entry.isDirectory() && existsSync(join(group, entry.name, 'package.json')))
        .map((entry) => {
          const root = join(group, entry.name);
          return {
            resolve: { conditions },
            ssr: { resolve: { conditions, externalConditions: conditions } },
            define: { __PACKAGE_VERSION__: JSON.stringify(packageVersion(root)) },
            test: {
              name: entry.name,
              root,
              include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
              passWithNoTests: true,
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
