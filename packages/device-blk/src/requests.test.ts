import { describe, expect, it } from 'vitest';
import { viewsOf } from './backends/range.js';
import { BlkStatus, BlkRequestType as T } from './constants.js';
import { type ParsedRequest, parseRequest, type RequestRules } from './requests.js';
import { ChainBuilder, concat, header, segments } from './test-support.js';

const MiB = 1 << 20;
const rules: RequestRules = {
  capacity: MiB,
  logicalBlockSize: 512,
  readOnly: false,
  discard: { maxSectors: 64, maxSegments: 4 },
  writeZeroes: { maxSectors: 64, maxSegments: 4 },
};

function answerOf(parsed: ParsedRequest): number | undefined {
  return parsed.request.type === 'answer' ? parsed.request.status : undefined;
}

describe('parseRequest', () => {
  it('parses a read into the guest ranges of the writable buffers, status in the last byte', () => {
    const b = new ChainBuilder();
    const chain = b.chain([header(T.IN, 8)], [1024, 1]);
    const parsed = parseRequest(chain, rules);
    expect(parsed.violation).toBeUndefined();
    const request = parsed.request;
    if (request.type !== 'read') throw new Error(`got ${request.type}`);
    expect(request.offset).toBe(8 * 512);
    expect(request.length).toBe(1024);
    expect(parsed.lengthOnSuccess).toBe(1025);
    expect(parsed.statusAddress).toBe(chain.writable[1]!.addr);
    expect(request.ranges).toEqual([chain.writable[0]]);
    // Writing through views of the ranges writes guest memory: no copy in between.
    viewsOf(request.memory, request.ranges)[0]!.fill(0x42);
    expect(b.memory.readU8(chain.writable[0]!.addr + 1023)).toBe(0x42);
  });

  it('takes the header split over descriptors and data sharing the status descriptor', () => {
    const b = new ChainBuilder();
    const h = header(T.IN, 2);
    const chain = b.chain([h.subarray(0, 3), h.subarray(3, 11), h.subarray(11)], [300, 213]);
    const parsed = parseRequest(chain, rules);
    if (parsed.request.type !== 'read') throw new Error(`got ${parsed.request.type}`);
    expect(parsed.request.offset).toBe(1024);
    expect(parsed.request.length).toBe(512);
    expect(parsed.request.ranges).toEqual([
      chain.writable[0],
      { addr: chain.writable[1]!.addr, len: 212 },
    ]);
    expect(parsed.statusAddress).toBe(chain.writable[1]!.addr + 212);
  });

  it('parses a write from the readable bytes after the header', () => {
    const b = new ChainBuilder();
    const data = new Uint8Array(1536).fill(7);
    const chain = b.chain([concat(header(T.OUT, 3), data)], [1]);
    const parsed = parseRequest(chain, rules);
    if (parsed.request.type !== 'write') throw new Error(`got ${parsed.request.type}`);
    expect(parsed.request.offset).toBe(1536);
    expect(parsed.request.length).toBe(1536);
    const { memory, ranges } = parsed.request;
    expect(ranges).toEqual([{ addr: chain.readable[0]!.addr + 16, len: 1536 }]);
    expect(viewsOf(memory, ranges).every((v) => v.every((x) => x === 7))).toBe(true);
    expect(parsed.lengthOnSuccess).toBe(1);
  });

  it('completes a chain without a writable byte with no status and a violation', () => {
    const b = new ChainBuilder();
    for (const chain of [b.chain([header(T.IN)], []), b.chain([header(T.IN)], [0, 0])]) {
      const parsed = parseRequest(chain, rules);
      expect(parsed.statusAddress).toBeUndefined();
      expect(parsed.violation?.code).toBe('BLK_NO_STATUS');
    }
  });

  it('answers IOERR to a header shorter than 16 bytes (or one in a writable buffer)', () => {
    const b = new ChainBuilder();
    const short = parseRequest(b.chain([header(T.IN).subarray(0, 15)], [513]), rules);
    expect(answerOf(short)).toBe(BlkStatus.IOERR);
    expect(short.violation?.code).toBe('BLK_HEADER_TOO_SHORT');
    const writableOnly = parseRequest(b.chain([], [16, 512, 1]), rules);
    expect(answerOf(writableOnly)).toBe(BlkStatus.IOERR);
    expect(writableOnly.violation?.code).toBe('BLK_HEADER_TOO_SHORT');
  });

  it.each([
    ['the last sector plus one', BigInt(MiB / 512 - 1), 1024],
    ['just past the end', BigInt(MiB / 512), 512],
    ['a sector beyond 2^53 bytes', 1n << 45n, 512],
    ['the largest sector', (1n << 64n) - 1n, 512],
    ['a sector whose byte offset wraps 64 bits', 1n << 55n, 512],
  ])('refuses a read of %s with IOERR', (_, sector, length) => {
    const parsed = parseRequest(
      new ChainBuilder().chain([header(T.IN, sector)], [length + 1]),
      rules,
    );
    expect(answerOf(parsed)).toBe(BlkStatus.IOERR);
    expect(parsed.violation?.code).toBe('BLK_OUT_OF_RANGE');
  });

  it('allows the last sector and an empty transfer at the end of the disk', () => {
    const b = new ChainBuilder();
    const last = parseRequest(b.chain([header(T.IN, MiB / 512 - 1)], [513]), rules);
    expect(last.request.type).toBe('read');
    const empty = parseRequest(b.chain([header(T.OUT, MiB / 512)], [1]), rules);
    expect(empty.request).toMatchObject({ type: 'write', length: 0 });
  });

  it('refuses data that is not whole sectors, or not whole logical blocks', () => {
    const b = new ChainBuilder();
    const odd = parseRequest(b.chain([header(T.IN, 0)], [514]), rules);
    expect(odd.violation?.code).toBe('BLK_UNALIGNED');
    const oddWrite = parseRequest(
      b.chain([concat(header(T.OUT, 0), new Uint8Array(100))], [1]),
      rules,
    );
    expect(answerOf(oddWrite)).toBe(BlkStatus.IOERR);
    const big = { ...rules, logicalBlockSize: 4096 };
    expect(parseRequest(b.chain([header(T.IN, 1)], [4097]), big).violation?.code).toBe(
      'BLK_UNALIGNED',
    );
    expect(parseRequest(b.chain([header(T.IN, 8)], [513]), big).violation?.code).toBe(
      'BLK_UNALIGNED',
    );
    expect(parseRequest(b.chain([header(T.IN, 8)], [4097]), big).request.type).toBe('read');
  });

  it('refuses writes, discards and write-zeroes on a read-only disk, allows reads and flush', () => {
    const b = new ChainBuilder();
    const ro = { ...rules, readOnly: true };
    const write = parseRequest(b.chain([concat(header(T.OUT), new Uint8Array(512))], [1]), ro);
    expect(answerOf(write)).toBe(BlkStatus.IOERR);
    expect(write.violation?.code).toBe('BLK_WRITE_READ_ONLY');
    const zero = parseRequest(
      b.chain([header(T.WRITE_ZEROES), segments({ sector: 0, sectors: 1 })], [1]),
      ro,
    );
    expect(answerOf(zero)).toBe(BlkStatus.IOERR);
    expect(parseRequest(b.chain([header(T.IN)], [513]), ro).request.type).toBe('read');
    expect(parseRequest(b.chain([header(T.FLUSH)], [1]), ro).request.type).toBe('flush');
  });

  it('parses GET_ID into 20 bytes, and refuses a shorter buffer', () => {
    const b = new ChainBuilder();
    const ok = parseRequest(b.chain([header(T.GET_ID)], [20, 1]), rules);
    if (ok.request.type !== 'get-id') throw new Error(`got ${ok.request.type}`);
    expect(ok.request.buffers.reduce((sum, v) => sum + v.length, 0)).toBe(20);
    expect(ok.lengthOnSuccess).toBe(21);
    const short = parseRequest(b.chain([header(T.GET_ID)], [19, 1]), rules);
    expect(answerOf(short)).toBe(BlkStatus.IOERR);
    expect(short.violation?.code).toBe('BLK_GET_ID_TOO_SHORT');
  });

  it('answers UNSUPP to every request type it does not implement, without a violation', () => {
    const b = new ChainBuilder();
    const types = [
      2, // legacy SCSI
      5, // legacy FLUSH_OUT
      T.GET_LIFETIME,
      T.SECURE_ERASE,
      T.ZONE_APPEND,
      T.ZONE_REPORT,
      T.ZONE_OPEN,
      T.ZONE_CLOSE,
      T.ZONE_FINISH,
      T.ZONE_RESET,
      T.ZONE_RESET_ALL,
      0x8000_0000, // legacy barrier bit on IN
      0xffff_ffff,
    ];
    for (const type of types) {
      const parsed = parseRequest(b.chain([header(type)], [64, 1]), rules);
      expect(answerOf(parsed), `type ${type}`).toBe(BlkStatus.UNSUPP);
      expect(parsed.violation).toBeUndefined();
      expect(parsed.lengthOnSuccess).toBe(1);
    }
  });

  describe('DISCARD and WRITE_ZEROES', () => {
    it('parse several segments into byte ranges', () => {
      const b = new ChainBuilder();
      const data = segments({ sector: 0, sectors: 8 }, { sector: 100, sectors: 64, flags: 1 });
      const zeroes = parseRequest(b.chain([header(T.WRITE_ZEROES), data], [1]), rules);
      expect(zeroes.request).toEqual({
        type: 'write-zeroes',
        ranges: [
          { offset: 0, length: 4096, unmap: false },
          { offset: 51200, length: 32768, unmap: true },
        ],
      });
      const discard = parseRequest(
        b.chain([concat(header(T.DISCARD), segments({ sector: 16, sectors: 8 }))], [1]),
        rules,
      );
      expect(discard.request).toEqual({
        type: 'discard',
        ranges: [{ offset: 8192, length: 4096 }],
      });
    });

    it('answer UNSUPP when not negotiated, to unknown flags, and to unmap on a discard', () => {
      const b = new ChainBuilder();
      const none = { ...rules, discard: undefined, writeZeroes: undefined };
      const one = segments({ sector: 0, sectors: 1 });
      expect(answerOf(parseRequest(b.chain([header(T.DISCARD), one], [1]), none))).toBe(
        BlkStatus.UNSUPP,
      );
      expect(answerOf(parseRequest(b.chain([header(T.WRITE_ZEROES), one], [1]), none))).toBe(
        BlkStatus.UNSUPP,
      );
      const unmap = segments({ sector: 0, sectors: 1, flags: 1 });
      expect(answerOf(parseRequest(b.chain([header(T.DISCARD), unmap], [1]), rules))).toBe(
        BlkStatus.UNSUPP,
      );
      // An unknown flag wins over an out-of-range segment: UNSUPP is a MUST (§5.2.6.2).
      const reserved = segments(
        { sector: 1n << 60n, sectors: 1 },
        { sector: 0, sectors: 1, flags: 2 },
      );
      expect(answerOf(parseRequest(b.chain([header(T.WRITE_ZEROES), reserved], [1]), rules))).toBe(
        BlkStatus.UNSUPP,
      );
    });

    it('answer IOERR to malformed, too many, too large and out-of-range segments', () => {
      const b = new ChainBuilder();
      const cases: [Uint8Array, string][] = [
        [new Uint8Array(0), 'BLK_SEGMENTS_MALFORMED'],
        [new Uint8Array(20), 'BLK_SEGMENTS_MALFORMED'],
        [
          segments(...Array.from({ length: 5 }, (_, i) => ({ sector: i, sectors: 1 }))),
          'BLK_TOO_MANY_SEGMENTS',
        ],
        [segments({ sector: 0, sectors: 65 }), 'BLK_SEGMENT_TOO_LARGE'],
        [segments({ sector: MiB / 512 - 1, sectors: 2 }), 'BLK_OUT_OF_RANGE'],
        [segments({ sector: (1n << 64n) - 1n, sectors: 1 }), 'BLK_OUT_OF_RANGE'],
      ];
      for (const [data, code] of cases) {
        for (const type of [T.DISCARD, T.WRITE_ZEROES]) {
          const parsed = parseRequest(b.chain([header(type), data], [1]), rules);
          expect(answerOf(parsed), code).toBe(BlkStatus.IOERR);
          expect(parsed.violation?.code).toBe(code);
        }
      }
    });
  });
});
