/**
 * The entropy scenario, for a third-party device plugin served to a real guest: the guest's own
 * virtio_rng driver must register the device as the hardware RNG and read random bytes through it.
 */

import { guestReports } from '../guest.js';

/** Bytes the guest reads in one go at the end (several requests' worth). */
export const RNG_BULK_BYTES = 65536;

/**
 * The guest script: names the current hardware RNG, hashes two 256-byte reads (they must differ,
 * and differ from 256 zero bytes), and counts a larger read. Every read is bounded by `timeout`, so
 * a device that never answers fails the run instead of hanging it.
 */
export function rngScript(): string {
  return [
    'echo "E2E rng-current $(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)"',
    'sum() { md5sum | cut -d" " -f1; }',
    'echo "E2E rng-first $(timeout 20 head -c 256 /dev/hwrng | sum)"',
    'echo "E2E rng-second $(timeout 20 head -c 256 /dev/hwrng | sum)"',
    'echo "E2E rng-zeros $(head -c 256 /dev/zero | sum)"',
    `echo "E2E rng-bulk $(timeout 60 head -c ${RNG_BULK_BYTES} /dev/hwrng | wc -c)"`,
    '',
  ].join('\n');
}

/** Problems in a run of {@link rngScript} (empty when the device served the guest). */
export function checkRngRun(output: string): string[] {
  const reports = guestReports(output);
  const problems: string[] = [];
  const current = reports.get('rng-current');
  if (current !== 'virtio_rng.0') {
    problems.push(`the guest's hardware RNG is '${current ?? '(none)'}', not virtio_rng.0`);
  }
  const first = reports.get('rng-first');
  const second = reports.get('rng-second');
  const zeros = reports.get('rng-zeros');
  if (!first || !second || !zeros) problems.push('the guest did not report its reads');
  else {
    if (first === second) problems.push('two reads of /dev/hwrng returned the same bytes');
    if (first === zeros || second === zeros) problems.push('/dev/hwrng returned zeros');
  }
  const bulk = reports.get('rng-bulk');
  if (bulk?.trim() !== String(RNG_BULK_BYTES)) {
    problems.push(`a ${RNG_BULK_BYTES}-byte read of /dev/hwrng returned ${bulk ?? 'nothing'}`);
  }
  return problems;
}
