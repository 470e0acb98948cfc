// The page's entry point: runs the demo and shows the results. The results also go on
// `window.virtkitDemo` and the status element's `data-state` becomes `done` (or `failed`), which
// is what the browser test waits for.
import { type DemoResults, type DeviceRun, runDemo } from './demo.js';

declare global {
  interface Window {
    virtkitDemo?: DemoResults;
  }
}

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  text?: string,
  className?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className !== undefined) node.className = className;
  return node;
}

function table(headers: readonly string[], rows: readonly (readonly string[])[]): HTMLTableElement {
  const result = element('table');
  const head = result.createTHead().insertRow();
  for (const header of headers) head.append(element('th', header));
  const body = result.createTBody();
  for (const cells of rows) {
    const row = body.insertRow();
    for (const cell of cells) row.append(element('td', cell));
  }
  return result;
}

function runRows<R extends DeviceRun>(runs: readonly R[], extra: (run: R) => string): string[][] {
  return runs.map((run) => [
    run.layout,
    run.sharedMemory ? 'SharedArrayBuffer' : 'ArrayBuffer',
    `0x${run.status.toString(16)}`,
    `${run.features} (${run.featureNames.join(', ')})`,
    run.requested.map((bytes, i) => `${bytes} → ${run.lengths[i]}`).join(', '),
    extra(run),
    String(run.violations),
  ]);
}

function render(results: DemoResults, output: HTMLElement): void {
  const { memory } = results;
  output.append(
    element('h2', 'Guest memory'),
    element(
      'p',
      `${memory.regions.map(([at, size]) => `${size / 1024} KiB at 0x${at.toString(16)}`).join(' + ')}, ` +
        `${memory.shared ? 'SharedArrayBuffer' : 'ArrayBuffer'}; 16 bytes written across the region ` +
        `boundary ${memory.roundTrip ? 'read back unchanged' : 'DID NOT read back'} ` +
        `(${memory.views} zero-copy views).`,
    ),
    element('h2', 'Registered plugins'),
    element('p', results.plugins.join(', ')),
    element('h2', 'rng (examples/rng-device), 32 bytes at most per request'),
    table(
      [
        'ring',
        'guest RAM',
        'status',
        'negotiated features',
        'requested → received',
        'bytes',
        'violations',
      ],
      runRows(results.rng, (run) => run.hex.join(' / ')),
    ),
    element('h2', 'echo (written in this page)'),
    table(
      [
        'ring',
        'guest RAM',
        'status',
        'negotiated features',
        'sent → echoed',
        'echoed text',
        'violations',
      ],
      runRows(results.echo, (run) => run.received),
    ),
  );
}

async function main(): Promise<void> {
  const status = document.getElementById('status')!;
  const output = document.getElementById('output')!;
  try {
    // SharedArrayBuffer exists only in cross-origin isolated pages (COOP + COEP headers).
    const results = await runDemo({ shared: self.crossOriginIsolated === true });
    render(results, output);
    window.virtkitDemo = results;
    const violations = [...results.rng, ...results.echo].reduce((n, r) => n + r.violations, 0);
    status.textContent = `done: ${violations} protocol violations`;
    status.dataset.state = 'done';
  } catch (error) {
    status.textContent = `failed: ${error instanceof Error ? error.message : String(error)}`;
    status.dataset.state = 'failed';
    throw error;
  }
}

void main();
