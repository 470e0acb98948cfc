import { describe, expect, it } from 'vitest';
import { checkRngRun, RNG_BULK_BYTES } from './rng.js';

const ZEROS = '348a9791dc41b89796ec3808b5b5262f';

function guestConsole(lines: Record<string, string>): string {
  return Object.entries(lines)
    .map(([key, value]) => `E2E ${key} ${value}\r`)
    .join('\n');
}

describe('checkRngRun', () => {
  const good = {
    'rng-current': 'virtio_rng.0',
    'rng-first': '0f343b0931126a20f133d67c2b018a3b',
    'rng-second': 'a9b8c3f4e2d1b0a9f8e7d6c5b4a39281',
    'rng-zeros': ZEROS,
    'rng-bulk': String(RNG_BULK_BYTES),
  };

  it('accepts a run where our device was the RNG and gave distinct bytes', () => {
    expect(checkRngRun(guestConsole(good))).toEqual([]);
  });

  it('names each failure', () => {
    expect(
      checkRngRun(
        guestConsole({
          ...good,
          'rng-current': '',
          'rng-first': ZEROS,
          'rng-second': ZEROS,
          'rng-bulk': '512',
        }),
      ),
    ).toEqual([
      "the guest's hardware RNG is '', not virtio_rng.0",
      'two reads of /dev/hwrng returned the same bytes',
      '/dev/hwrng returned zeros',
      `a ${RNG_BULK_BYTES}-byte read of /dev/hwrng returned 512`,
    ]);
    expect(checkRngRun('')).toEqual([
      "the guest's hardware RNG is '(none)', not virtio_rng.0",
      'the guest did not report its reads',
      `a ${RNG_BULK_BYTES}-byte read of /dev/hwrng returned nothing`,
    ]);
  });
});
