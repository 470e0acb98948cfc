/**
 * The work the sample device does: checksums over scattered guest buffers, fed segment by segment
 * so a payload spread over many descriptors is never copied. A device with real I/O has backends
 * here instead (see `backends/README.md`).
 */

/** CRC-32 lookup table for the reflected IEEE polynomial 0xEDB88320. */
const CRC32_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 (as zlib's `crc32`) of the concatenated `parts`. */
export function crc32(parts: readonly Uint8Array[]): number {
  let crc = 0xffffffff;
  for (const part of parts) {
    for (let i = 0; i < part.length; i++) {
      crc = CRC32_TABLE[(crc ^ part[i]!) & 0xff]! ^ (crc >>> 8);
    }
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** zlib's NMAX: the most bytes after which Adler-32's sums still fit in 32 bits unreduced. */
const ADLER_NMAX = 5552;

/** Adler-32 (RFC 1950, as zlib's `adler32`) of the concatenated `parts`. */
export function adler32(parts: readonly Uint8Array[]): number {
  let a = 1;
  let b = 0;
  let pending = 0;
  for (const part of parts) {
    for (let i = 0; i < part.length; i++) {
      a += part[i]!;
      b += a;
      // Reducing every NMAX bytes, not every byte, is zlib's speed-up; it keeps the sums below
      // 2^32, far from 2^53 where doubles would start rounding them.
      if (++pending === ADLER_NMAX) {
        a %= 65521;
        b %= 65521;
        pending = 0;
      }
    }
  }
  return ((b % 65521) * 65536 + (a % 65521)) >>> 0;
}
