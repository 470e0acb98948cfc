/**
 * Parsing virtio-blk requests (§5.2.6) from descriptor chains. A request is a byte stream: a
 * 16-byte header `{ le32 type; le32 reserved; le64 sector; }` in the device-readable part, then
 * data (readable for writes and discard/write-zeroes segments, writable for reads and GET_ID),
 * and a status byte: the last device-writable byte. Descriptor boundaries mean nothing (§2.6.4),
 * so a header split over descriptors, or data sharing a descriptor with the status byte, is fine.
 *
 * Parsing never throws for any chain a queue can hand out. A malformed request becomes an
 * immediate answer (the spec's status) plus a violation for the device to count.
 */

import type { DescriptorChain, GuestMemory, Segment } from '@virtkit/core';
import {
  type BlkStatus,
  type BlkViolationCode,
  DEVICE_ID_BYTES,
  DISCARD_SEGMENT_SIZE,
  REQUEST_HEADER_SIZE,
  SECTOR_SIZE,
  BlkStatus as Status,
  BlkRequestType as Type,
  WRITE_ZEROES_FLAG_UNMAP,
} from './constants.js';

/** Limits of DISCARD or WRITE_ZEROES requests, as the config space states them. */
export interface SegmentLimits {
  /** `max_discard_sectors` / `max_write_zeroes_sectors`: sectors per segment. */
  readonly maxSectors: number;
  /** `max_discard_seg` / `max_write_zeroes_seg`: segments per request. */
  readonly maxSegments: number;
}

/** What parsing needs to know about the disk and the negotiated features. */
export interface RequestRules {
  /** Disk size in bytes (a multiple of 512). */
  readonly capacity: number;
  /** Requests must be aligned to this many bytes (`blk_size`; 512 unless set larger). */
  readonly logicalBlockSize: number;
  /** Writes are refused with IOERR. */
  readonly readOnly: boolean;
  /** DISCARD limits, or `undefined` if VIRTIO_BLK_F_DISCARD was not negotiated. */
  readonly discard: SegmentLimits | undefined;
  /** WRITE_ZEROES limits, or `undefined` if VIRTIO_BLK_F_WRITE_ZEROES was not negotiated. */
  readonly writeZeroes: SegmentLimits | undefined;
}

/** A byte range of the disk. */
export interface ByteRange {
  readonly offset: number;
  readonly length: number;
}

/** A WRITE_ZEROES segment: a byte range and whether the driver allows deallocating it. */
export interface ZeroRange extends ByteRange {
  readonly unmap: boolean;
}

/** What a request asks the backend to do. */
export type BlockRequest =
  | {
      readonly type: 'read';
      readonly offset: number;
      readonly length: number;
      /** The guest memory `ranges` lie in. */
      readonly memory: GuestMemory;
      /** Guest ranges to read into, in order (checked against guest memory at pop). */
      readonly ranges: readonly Segment[];
    }
  | {
      readonly type: 'write';
      readonly offset: number;
      readonly length: number;
      /** The guest memory `ranges` lie in. */
      readonly memory: GuestMemory;
      /** Guest ranges to write from, in order (checked against guest memory at pop). */
      readonly ranges: readonly Segment[];
    }
  | { readonly type: 'flush' }
  | {
      readonly type: 'get-id';
      /** Zero-copy views of the 20 guest bytes the ID goes into. */
      readonly buffers: Uint8Array[];
    }
  | { readonly type: 'discard'; readonly ranges: readonly ByteRange[] }
  | { readonly type: 'write-zeroes'; readonly ranges: readonly ZeroRange[] }
  /** Nothing to do: complete at once with this status. */
  | { readonly type: 'answer'; readonly status: BlkStatus };

/** A guest mistake found while parsing, to be counted as a protocol violation. */
export interface RequestViolation {
  readonly code: BlkViolationCode;
  readonly message: string;
}

/** A parsed request. */
export interface ParsedRequest {
  readonly request: BlockRequest;
  /**
   * Guest address of the status byte (the last device-writable byte), or `undefined` when the
   * chain has none: the device then returns the chain with a used length of 0.
   */
  readonly statusAddress: number | undefined;
  /** Used length to report if the request succeeds (data written plus the status byte). */
  readonly lengthOnSuccess: number;
  /** Set when the guest got something wrong. */
  readonly violation?: RequestViolation;
}

const SECTORS_PER_SAFE_INTEGER = BigInt(Math.floor(Number.MAX_SAFE_INTEGER / SECTOR_SIZE));

/**
 * Parses the request in `chain`.
 *
 * @example
 * ```ts
 * const { request, statusAddress } = parseRequest(chain, rules);
 * if (request.type === 'read') await backend.readGuest(request.offset, request.memory, request.ranges);
 * ```
 */
export function parseRequest(chain: DescriptorChain, rules: RequestRules): ParsedRequest {
  const statusAddress = lastWritableByte(chain);
  if (statusAddress === undefined) {
    return {
      request: { type: 'answer', status: Status.IOERR },
      statusAddress,
      lengthOnSuccess: 0,
      violation: {
        code: 'BLK_NO_STATUS',
        message: 'request has no device-writable byte for its status',
      },
    };
  }
  const answer = (status: BlkStatus, violation?: RequestViolation): ParsedRequest =>
    violation
      ? { request: { type: 'answer', status }, statusAddress, lengthOnSuccess: 1, violation }
      : { request: { type: 'answer', status }, statusAddress, lengthOnSuccess: 1 };

  if (chain.readableLength < REQUEST_HEADER_SIZE) {
    return answer(Status.IOERR, {
      code: 'BLK_HEADER_TOO_SHORT',
      message: `request has ${chain.readableLength} device-readable bytes, less than the 16-byte header`,
    });
  }
  const reader = chain.reader();
  const type = reader.readU32();
  reader.skip(4); // reserved (legacy ioprio): a hint we do not use
  const sector = reader.readU64();
  // The status byte is not data: requests that write data stop one byte short of it.
  const writableData = chain.writableLength - 1;
  const readableData = chain.readableLength - REQUEST_HEADER_SIZE;

  switch (type) {
    case Type.IN: {
      const problem = checkRange(sector, writableData, rules, 'read');
      if (problem) return answer(Status.IOERR, problem);
      return {
        request: {
          type: 'read',
          offset: Number(sector) * SECTOR_SIZE,
          length: writableData,
          memory: chain.memory,
          ranges: chain.writer().ranges(writableData),
        },
        statusAddress,
        lengthOnSuccess: writableData + 1,
      };
    }
    case Type.OUT: {
      if (rules.readOnly) {
        return answer(Status.IOERR, {
          code: 'BLK_WRITE_READ_ONLY',
          message: `write of ${readableData} bytes at sector ${sector} to a read-only disk`,
        });
      }
      const problem = checkRange(sector, readableData, rules, 'write');
      if (problem) return answer(Status.IOERR, problem);
      return {
        request: {
          type: 'write',
          offset: Number(sector) * SECTOR_SIZE,
          length: readableData,
          memory: chain.memory,
          ranges: reader.ranges(readableData),
        },
        statusAddress,
        lengthOnSuccess: 1,
      };
    }
    case Type.FLUSH:
      return { request: { type: 'flush' }, statusAddress, lengthOnSuccess: 1 };
    case Type.GET_ID: {
      if (writableData < DEVICE_ID_BYTES) {
        return answer(Status.IOERR, {
          code: 'BLK_GET_ID_TOO_SHORT',
          message: `GET_ID buffer of ${writableData} bytes cannot hold the ${DEVICE_ID_BYTES}-byte ID`,
        });
      }
      return {
        request: { type: 'get-id', buffers: chain.writer().views(DEVICE_ID_BYTES) },
        statusAddress,
        lengthOnSuccess: DEVICE_ID_BYTES + 1,
      };
    }
    case Type.DISCARD:
    case Type.WRITE_ZEROES: {
      const zeroes = type === Type.WRITE_ZEROES;
      const limits = zeroes ? rules.writeZeroes : rules.discard;
      const name = zeroes ? 'WRITE_ZEROES' : 'DISCARD';
      // Not negotiated: the driver asks for something it was not offered.
      if (!limits) return answer(Status.UNSUPP);
      if (rules.readOnly) {
        return answer(Status.IOERR, {
          code: 'BLK_WRITE_READ_ONLY',
          message: `${name} request to a read-only disk`,
        });
      }
      return parseSegments(reader, readableData, zeroes, limits, rules, answer, statusAddress);
    }
    default:
      // GET_LIFETIME, SECURE_ERASE, the zoned requests, legacy SCSI and anything unknown.
      return answer(Status.UNSUPP);
  }
}

function parseSegments(
  reader: ReturnType<DescriptorChain['reader']>,
  dataLength: number,
  zeroes: boolean,
  limits: SegmentLimits,
  rules: RequestRules,
  answer: (status: BlkStatus, violation?: RequestViolation) => ParsedRequest,
  statusAddress: number,
): ParsedRequest {
  const name = zeroes ? 'WRITE_ZEROES' : 'DISCARD';
  if (dataLength === 0 || dataLength % DISCARD_SEGMENT_SIZE !== 0) {
    return answer(Status.IOERR, {
      code: 'BLK_SEGMENTS_MALFORMED',
      message: `${name} data of ${dataLength} bytes is not one or more 16-byte segments`,
    });
  }
  const count = dataLength / DISCARD_SEGMENT_SIZE;
  if (count > limits.maxSegments) {
    return answer(Status.IOERR, {
      code: 'BLK_TOO_MANY_SEGMENTS',
      message: `${name} request with ${count} segments, more than the ${limits.maxSegments} allowed`,
    });
  }
  const ranges: ZeroRange[] = [];
  let failure: RequestViolation | undefined;
  let unsupported = false;
  for (let i = 0; i < count; i++) {
    const sector = reader.readU64();
    const sectors = reader.readU32();
    const flags = reader.readU32();
    // §5.2.6.2: unknown flags, and unmap on a discard, are UNSUPP whatever else is wrong.
    if (flags & ~WRITE_ZEROES_FLAG_UNMAP || (!zeroes && flags & WRITE_ZEROES_FLAG_UNMAP)) {
      unsupported = true;
      continue;
    }
    if (failure) continue;
    if (sectors > limits.maxSectors) {
      failure = {
        code: 'BLK_SEGMENT_TOO_LARGE',
        message: `${name} segment of ${sectors} sectors, more than the ${limits.maxSectors} allowed`,
      };
      continue;
    }
    const length = sectors * SECTOR_SIZE;
    const problem = checkRange(sector, length, rules, name);
    if (problem) {
      failure = problem;
      continue;
    }
    ranges.push({
      offset: Number(sector) * SECTOR_SIZE,
      length,
      unmap: (flags & WRITE_ZEROES_FLAG_UNMAP) !== 0,
    });
  }
  if (unsupported) return answer(Status.UNSUPP);
  if (failure) return answer(Status.IOERR, failure);
  return {
    request: zeroes
      ? { type: 'write-zeroes', ranges }
      : { type: 'discard', ranges: ranges.map(({ offset, length }) => ({ offset, length })) },
    statusAddress,
    lengthOnSuccess: 1,
  };
}

/**
 * Checks that `length` bytes from `sector` are whole logical blocks inside the disk. The
 * arithmetic stays exact: the 64-bit sector is compared as a bigint before it becomes a number.
 */
function checkRange(
  sector: bigint,
  length: number,
  rules: RequestRules,
  what: string,
): RequestViolation | undefined {
  const block = rules.logicalBlockSize;
  if (length % block !== 0 || sector % BigInt(block / SECTOR_SIZE) !== 0n) {
    return {
      code: 'BLK_UNALIGNED',
      message: `${what} of ${length} bytes at sector ${sector} is not in whole ${block}-byte blocks`,
    };
  }
  if (
    sector > SECTORS_PER_SAFE_INTEGER ||
    Number(sector) * SECTOR_SIZE > rules.capacity ||
    length > rules.capacity - Number(sector) * SECTOR_SIZE
  ) {
    return {
      code: 'BLK_OUT_OF_RANGE',
      message: `${what} of ${length} bytes at sector ${sector} goes beyond the ${rules.capacity}-byte disk`,
    };
  }
  return undefined;
}

/** Guest address of the last device-writable byte of `chain`, if it has one. */
function lastWritableByte(chain: DescriptorChain): number | undefined {
  const segments = chain.writable;
  for (let i = segments.length - 1; i >= 0; i--) {
    const segment = segments[i]!;
    if (segment.len > 0) return segment.addr + segment.len - 1;
  }
  return undefined;
}
