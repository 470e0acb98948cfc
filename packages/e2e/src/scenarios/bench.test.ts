import { describe, expect, it } from 'vitest';
import { blkBenchScript, median, parseBenchOutput } from './bench.js';

describe('benchmark output', () => {
  it('collects repeated metrics in order, errors apart, and ignores other lines', () => {
    const { values, errors } = parseBenchOutput(
      'boot noise\r\nBENCH seq-write-us 1000\r\nBENCH seq-write-us 2000\nBENCH error fio no such file\nBENCH randread-iops 12.5\nBENCH done\n',
    );
    expect(values.get('seq-write-us')).toEqual([1000, 2000]);
    expect(values.get('randread-iops')).toEqual([12.5]);
    expect(errors).toEqual(['fio no such file']);
  });

  it('turns a value that is not a number into an error', () => {
    expect(parseBenchOutput('BENCH guest-to-host-mbps \n').errors).toEqual([
      'guest-to-host-mbps: not a number: ',
    ]);
  });

  it('takes medians of odd and even counts', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
  });

  it('leaves fio out when asked to', () => {
    expect(blkBenchScript({ fioSeconds: 0 })).toContain('[ 0 -gt 0 ]');
    expect(blkBenchScript({ seqMiB: 64, repeats: 2 })).toContain('count=64');
  });
});
