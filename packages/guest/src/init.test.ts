import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { createInitScript, GUEST_MODES, parseGuestExit } from './init.js';

const hostSh = spawnSync('sh', ['-c', 'exit 0']).status === 0;

describe('createInitScript', () => {
  it('bakes in the default mode and exit action, which the command line can override', () => {
    const script = createInitScript({ mode: 'demo', exit: 'poweroff' });
    expect(script.startsWith('#!/bin/busybox sh\n')).toBe(true);
    expect(script).toMatch(/^mode=demo$/m);
    expect(script).toMatch(/^on_exit=poweroff$/m);
    expect(script).toMatch(/virtkit\.mode=\*\) mode="\$\{arg#virtkit\.mode=\}"/);
    expect(script).toMatch(/virtkit\.exit=\*\) on_exit="\$\{arg#virtkit\.exit=\}"/);
    expect(createInitScript()).toMatch(/^mode=shell$/m);
    expect(createInitScript()).toMatch(/^on_exit=reboot$/m);
  });

  it('mounts before it loads modules, and loads modules before the ready marker', () => {
    const script = createInitScript();
    const at = (needle: string): number => {
      const index = script.indexOf(needle);
      expect(index, needle).toBeGreaterThanOrEqual(0);
      return index;
    };
    expect(at('mount -t proc')).toBeLessThan(at('--install -s'));
    expect(at('--install -s')).toBeLessThan(at('mount -t devtmpfs'));
    expect(at('mount -t devtmpfs')).toBeLessThan(at('insmod "$file"'));
    expect(at('insmod "$file"')).toBeLessThan(at('echo VIRTKIT-GUEST-READY'));
    expect(at('echo VIRTKIT-GUEST-READY')).toBeLessThan(at('case "$mode" in'));
    expect(script).toContain('done < /etc/virtkit/modules');
    expect(script).toContain('echo "virtkit: loading $name"');
  });

  it('runs /test.sh in script mode and reports its status before rebooting', () => {
    const script = createInitScript({ mode: 'script' });
    expect(script).toMatch(/sh \/test\.sh\n\s+virtkit_finish \$\?/);
    expect(script).toContain('echo "VIRTKIT-EXIT $1"');
    expect(script).toMatch(/\*\) reboot -f ;;/);
    expect(script).toContain('setsid cttyhack sh -l');
  });

  it.skipIf(!hostSh).each(GUEST_MODES)(
    'is valid shell syntax (mode %s, checked with the host sh -n)',
    (mode) => {
      const result = spawnSync('sh', ['-n'], { input: createInitScript({ mode }) });
      expect(result.stderr.toString()).toBe('');
      expect(result.status).toBe(0);
    },
  );
});

describe('parseGuestExit', () => {
  it('finds the exit code, also after unterminated output and with CRLF', () => {
    expect(
      parseGuestExit('VIRTKIT-GUEST-READY\nhello\nVIRTKIT-EXIT 0\n[ 1.0] reboot: Restarting'),
    ).toBe(0);
    expect(parseGuestExit('no newline at the endVIRTKIT-EXIT 3\r\n')).toBe(3);
    expect(parseGuestExit('VIRTKIT-EXIT 42')).toBe(42);
  });

  it('returns undefined while the guest has not finished', () => {
    expect(parseGuestExit('VIRTKIT-GUEST-READY\n')).toBeUndefined();
    expect(parseGuestExit('echo "VIRTKIT-EXIT $1"\n')).toBeUndefined();
  });
});
