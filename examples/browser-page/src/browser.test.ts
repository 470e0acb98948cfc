/**
 * Builds the page, serves it on 127.0.0.1 and loads it in Debian's Chromium (headless, through
 * playwright-core): @virtkit/core, its test driver and two device plugins must run in a real
 * browser, from a bundle that contains no Node built-in.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkDemoResults } from './check-results.js';
import type { DemoResults } from './demo.js';

const CHROMIUM = '/usr/bin/chromium';
/** The flags /work/shared/docs/guests.md lists: without the networking ones, this closed network refuses Chromium. */
const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const packageDir = fileURLToPath(new URL('..', import.meta.url));
const chromiumMissing = !existsSync(CHROMIUM);
// The Node 24 re-run (VIRTKIT_SKIP_SLOW=1) may run where Chromium is not installed.
const skipBrowser = chromiumMissing && process.env.VIRTKIT_SKIP_SLOW === '1';

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};

/**
 * Serves the files of `root` (no subdirectories). COOP + COEP make the page cross-origin
 * isolated, the condition under which browsers offer SharedArrayBuffer.
 */
async function serve(root: string): Promise<{ server: Server; url: string }> {
  const server = createServer((request, response) => {
    const name = new URL(request.url ?? '/', 'http://localhost').pathname.slice(1) || 'index.html';
    const type = CONTENT_TYPES[extname(name)];
    if (!type || !/^[\w.-]+$/.test(name)) {
      response.writeHead(404).end();
      return;
    }
    readFile(join(root, name)).then(
      (body) =>
        response
          .writeHead(200, {
            'content-type': type,
            'cross-origin-opener-policy': 'same-origin',
            'cross-origin-embedder-policy': 'require-corp',
          })
          .end(body),
      () => response.writeHead(404).end(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { server, url: `http://127.0.0.1:${port}/` };
}

describe('browser page', () => {
  let outDir = '';
  const cleanup: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    // A directory of its own, so concurrent runs and `pnpm build` do not overwrite each other.
    outDir = await mkdtemp(join(tmpdir(), 'virtkit-browser-page-'));
    cleanup.push(() => rm(outDir, { recursive: true, force: true }));
    execFileSync(process.execPath, ['build.mjs', outDir], { cwd: packageDir, stdio: 'pipe' });
  });

  afterAll(async () => {
    for (const step of cleanup.reverse()) await step();
  });

  it('bundles core, its testing entry and the rng plugin without Node built-ins', async () => {
    const meta = JSON.parse(await readFile(join(outDir, 'meta.json'), 'utf8')) as {
      inputs: Record<string, { imports: { path: string; external?: boolean }[] }>;
    };
    const inputs = Object.keys(meta.inputs);
    // Sources, through the `@virtkit/source` condition, of everything the page uses.
    for (const source of [
      '../../packages/core/src/index.ts',
      '../../packages/core/src/testing/index.ts',
      '../rng-device/src/device.ts',
      'src/echo.ts',
    ]) {
      expect(inputs).toContain(source);
    }
    const imports = Object.values(meta.inputs).flatMap((input) => input.imports);
    expect(imports.filter((i) => i.path.startsWith('node:') || i.external)).toEqual([]);
    const bundle = await readFile(join(outDir, 'main.js'), 'utf8');
    expect(bundle.match(/["'`]node:[\w/]+["'`]/g) ?? []).toEqual([]);
    expect(bundle.match(/\brequire\(\s*["'`]/g) ?? []).toEqual([]);
  });

  it.skipIf(skipBrowser)(
    'runs in headless Chromium: random bytes and echo on both ring layouts, no violation',
    async () => {
      if (chromiumMissing) {
        throw new Error(
          `Chromium is not installed (${CHROMIUM} is missing): run scripts/setup.sh, which installs the Debian package chromium`,
        );
      }
      const { chromium } = await import('playwright-core');
      const { server, url } = await serve(outDir);
      cleanup.push(() => new Promise((resolve) => server.close(resolve)));
      const userDataDir = await mkdtemp(join(tmpdir(), 'virtkit-chromium-'));
      cleanup.push(() => rm(userDataDir, { recursive: true, force: true }));

      // launchPersistentContext is how Playwright takes a --user-data-dir (launch() refuses the flag).
      const context = await chromium.launchPersistentContext(userDataDir, {
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_FLAGS,
        timeout: 15_000,
      });
      cleanup.push(() => context.close());
      const page = context.pages()[0] ?? (await context.newPage());
      const problems: string[] = [];
      page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
      page.on('console', (message) => {
        if (message.type() === 'error') problems.push(`console error: ${message.text()}`);
      });
      page.on('requestfailed', (request) => problems.push(`request failed: ${request.url()}`));

      // Served cross-origin isolated (SharedArrayBuffer guest RAM), then opened from disk (no
      // SharedArrayBuffer global at all).
      for (const load of [
        { url, shared: true },
        { url: pathToFileURL(join(outDir, 'index.html')).href, shared: false },
      ]) {
        await page.goto(load.url);
        const status = page.locator('#status:is([data-state="done"], [data-state="failed"])');
        await status.waitFor({ timeout: 10_000 });
        expect(await status.textContent(), load.url).toBe('done: 0 protocol violations');

        const results = (await page.evaluate(() => window.virtkitDemo)) as DemoResults;
        checkDemoResults(results, { shared: load.shared });
        // biome-ignore lint/performance/useDomNodeTextContent: the rendered text is what a reader sees
        const shown = await page.locator('#output').innerText();
        for (const hex of results.rng.flatMap((run) => run.hex)) expect(shown).toContain(hex);
        for (const run of results.echo) expect(shown).toContain(run.received);
        expect(shown).toContain(
          '0x530000000 (RING_INDIRECT_DESC, RING_EVENT_IDX, VERSION_1, RING_PACKED)',
        );
        expect(problems, load.url).toEqual([]);
      }
    },
    20_000,
  );
});
