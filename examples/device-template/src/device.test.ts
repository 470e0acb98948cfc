import { DeviceStatus, Feature, featureBit, type RingLayout } from '@virtkit/core';
import { TestDriver } from '@virtkit/core/testing';
import { describe, expect, it } from 'vitest';
import { adler32, crc32 } from './checksum.js';
import {
  RESPONSE_SIZE,
  SAMPLE_DEVICE_TYPE,
  SampleConfig,
  SampleFeature,
  SampleStatus,
  SampleRequestType as Type,
} from './constants.js';
import { SampleDevice, type SampleDeviceOptions } from './device.js';
import { SampleError } from './errors.js';
import { ascii, concat, decode, header, referenceAdler32, referenceCrc32 } from './test-support.js';

interface Variant {
  readonly layout: RingLayout;
  readonly eventIdx: boolean;
  readonly indirect: boolean;
}

// Every protocol test runs over both ring layouts, with and without EVENT_IDX and INDIRECT_DESC.
const VARIANTS: Variant[] = (['split', 'packed'] as const).flatMap((layout) =>
  [false, true].flatMap((eventIdx) =>
    [false, true].map((indirect) => ({ layout, eventIdx, indirect })),
  ),
);

const variantName = (v: Variant) =>
  `${v.layout}${v.eventIdx ? '+event_idx' : ''}${v.indirect ? '+indirect' : ''}`;

/** A driver on a new device with the variant's ring features, minus `drop`. */
function drive(variant: Variant, options: SampleDeviceOptions = {}, drop = 0n) {
  const device = new SampleDevice(options);
  let features = device.features | featureBit(Feature.VERSION_1);
  if (!variant.eventIdx) features &= ~featureBit(Feature.RING_EVENT_IDX);
  if (!variant.indirect) features &= ~featureBit(Feature.RING_INDIRECT_DESC);
  return TestDriver.create(device, { layout: variant.layout, features: features & ~drop }).then(
    (driver) => ({ device, driver }),
  );
}

describe('checksums', () => {
  it('match the published check values', () => {
    // The CRC-32 "check" value of the catalogue, and Adler-32 of "Wikipedia" (RFC 1950 example).
    expect(crc32([ascii('123456789')])).toBe(0xcbf43926);
    expect(adler32([ascii('Wikipedia')])).toBe(0x11e60398);
    expect(crc32([])).toBe(0);
    expect(adler32([])).toBe(1);
  });

  it('do not depend on how the bytes are split', () => {
    const bytes = Uint8Array.from({ length: 20000 }, (_, i) => (i * 131 + 7) & 0xff);
    const parts = [bytes.subarray(0, 1), bytes.subarray(1, 6000), bytes.subarray(6000)];
    expect(crc32(parts)).toBe(referenceCrc32(bytes));
    // 20000 bytes of 0xff-ish data cross Adler's deferred reduction several times.
    expect(adler32(parts)).toBe(referenceAdler32(bytes));
    expect(adler32([new Uint8Array(100000).fill(0xff)])).toBe(
      referenceAdler32(new Uint8Array(100000).fill(0xff)),
    );
  });
});

describe('SampleDevice definition', () => {
  it('states its type, features, queue and config space', async () => {
    const device = new SampleDevice({ maxPayload: 4096, queueSize: 64 });
    expect(device.deviceType).toBe(SAMPLE_DEVICE_TYPE);
    expect(device.queues).toEqual([{ maxSize: 64 }]);
    for (const bit of [
      Feature.RING_INDIRECT_DESC,
      Feature.RING_EVENT_IDX,
      Feature.RING_PACKED,
      SampleFeature.ADLER32,
    ]) {
      expect(device.features & featureBit(bit)).not.toBe(0n);
    }
    const driver = await TestDriver.create(device);
    const config = driver.readConfig(SampleConfig.MAX_PAYLOAD, 4);
    expect(new DataView(config.buffer).getUint32(0, true)).toBe(4096);
    expect(driver.status & DeviceStatus.DRIVER_OK).toBeTruthy();
  });

  it('does not offer ADLER32 when told not to', () => {
    const device = new SampleDevice({ adler32: false });
    expect(device.features & featureBit(SampleFeature.ADLER32)).toBe(0n);
  });

  it('refuses options that cannot work', () => {
    expect(() => new SampleDevice({ queueSize: 100 })).toThrow(SampleError);
    expect(() => new SampleDevice({ maxPayload: 0 })).toThrow(/max payload/);
    expect(() => new SampleDevice({ maxPayload: 1.5 })).toThrow(SampleError);
  });
});

describe.each(VARIANTS)('SampleDevice over $layout ring (%#)', (variant) => {
  const label = variantName(variant);

  it(`${label}: answers CRC-32 and Adler-32 requests`, async () => {
    const { driver, device } = await drive(variant);
    const payload = ascii('123456789');
    const crc = await driver.send(0, {
      readable: [concat(header(Type.CRC32, payload.length), payload)],
      writable: [RESPONSE_SIZE],
    });
    expect(crc.len).toBe(RESPONSE_SIZE);
    expect(decode(crc.written)).toEqual({ status: SampleStatus.OK, checksum: 0xcbf43926 });

    const wiki = ascii('Wikipedia');
    const adler = await driver.send(0, {
      readable: [header(Type.ADLER32, wiki.length), wiki],
      writable: [RESPONSE_SIZE],
    });
    expect(decode(adler.written)).toEqual({ status: SampleStatus.OK, checksum: 0x11e60398 });
    expect(device.stats).toEqual({ ok: 2, unsupported: 0, malformed: 0 });
    expect(driver.controller.violations.count()).toBe(0);
  });

  it(`${label}: reads a request split anywhere across descriptors`, async () => {
    const { driver } = await drive(variant);
    const payload = Uint8Array.from({ length: 3000 }, (_, i) => (i * 7) & 0xff);
    const request = concat(header(Type.CRC32, payload.length), payload);
    // Header cut in the middle of `length`, payload in uneven pieces; response in 3 pieces.
    const readable = [
      request.subarray(0, 5),
      request.subarray(5, 9),
      request.subarray(9, 1000),
      request.subarray(1000),
    ];
    const reply = await driver.send(0, { readable, writable: [1, 4, 3] });
    expect(reply.len).toBe(RESPONSE_SIZE);
    expect(decode(reply.written)).toEqual({
      status: SampleStatus.OK,
      checksum: referenceCrc32(payload),
    });
  });

  it(`${label}: answers many requests posted before one kick`, async () => {
    const { driver, device } = await drive(variant);
    const payloads = Array.from({ length: 40 }, (_, n) =>
      Uint8Array.from({ length: n * 3 }, (_, i) => (i + n) & 0xff),
    );
    const tokens = payloads.map(
      (payload) =>
        driver.post(0, {
          readable: [header(Type.CRC32, payload.length), payload],
          writable: [RESPONSE_SIZE],
        }).token,
    );
    driver.kick(0, true);
    for (const [n, token] of tokens.entries()) {
      const reply = await driver.wait(0, token);
      expect(decode(reply.written).checksum).toBe(referenceCrc32(payloads[n]!));
    }
    expect(device.stats.ok).toBe(40);
    // One batch, published once: one interrupt however many requests it held.
    expect(driver.interrupt.usedCount(0)).toBe(1);
  });

  it(`${label}: counts malformed requests and keeps serving`, async () => {
    const { driver, device } = await drive(variant, { maxPayload: 16 });
    const violations = driver.controller.violations;
    const ioerr = { status: SampleStatus.IOERR, checksum: 0 };

    const short = await driver.send(0, { readable: [ascii('abc')], writable: [8] });
    expect(decode(short.written)).toEqual(ioerr);
    expect(violations.count('SAMPLE_HEADER_TOO_SHORT')).toBe(1);

    const reserved = await driver.send(0, {
      readable: [header(Type.CRC32, 1, 9), ascii('x')],
      writable: [8],
    });
    expect(decode(reserved.written)).toEqual(ioerr);
    expect(violations.count('SAMPLE_RESERVED_NONZERO')).toBe(1);

    const mismatch = await driver.send(0, {
      readable: [header(Type.CRC32, 5), ascii('abc')],
      writable: [8],
    });
    expect(decode(mismatch.written)).toEqual(ioerr);
    expect(violations.count('SAMPLE_LENGTH_MISMATCH')).toBe(1);

    const limit = await driver.send(0, {
      readable: [header(Type.CRC32, 16), new Uint8Array(16)],
      writable: [8],
    });
    expect(decode(limit.written)).toEqual({
      status: SampleStatus.OK,
      checksum: referenceCrc32(new Uint8Array(16)),
    });
    const large = await driver.send(0, {
      readable: [header(Type.CRC32, 17), new Uint8Array(17)],
      writable: [8],
    });
    expect(decode(large.written)).toEqual(ioerr);
    expect(violations.count('SAMPLE_PAYLOAD_TOO_LARGE')).toBe(1);

    // No room for a response: the chain comes back with nothing written.
    const noRoom = await driver.send(0, { readable: [header(Type.CRC32, 0)], writable: [7] });
    expect(noRoom.len).toBe(0);
    const noWritable = await driver.send(0, { readable: [header(Type.CRC32, 0)] });
    expect(noWritable.len).toBe(0);
    expect(violations.count('SAMPLE_NO_RESPONSE')).toBe(2);

    expect(device.stats.malformed).toBe(6);
    expect(violations.recent().every((v) => v.queue === 0 && !v.needsReset)).toBe(true);
    expect(driver.status & DeviceStatus.DEVICE_NEEDS_RESET).toBe(0);
    // Still serving after all that.
    const ok = await driver.send(0, { readable: [header(Type.CRC32, 0)], writable: [8] });
    expect(decode(ok.written)).toEqual({ status: SampleStatus.OK, checksum: 0 });
  });

  it(`${label}: answers UNSUPP to unknown types and un-negotiated ADLER32`, async () => {
    const { driver, device } = await drive(variant, {}, featureBit(SampleFeature.ADLER32));
    for (const type of [Type.ADLER32, 2, 0xffff]) {
      const reply = await driver.send(0, { readable: [header(type, 0)], writable: [8] });
      expect(decode(reply.written)).toEqual({ status: SampleStatus.UNSUPP, checksum: 0 });
    }
    expect(device.stats).toEqual({ ok: 0, unsupported: 3, malformed: 0 });
    // Not a guest mistake: a newer driver may know types this device does not.
    expect(driver.controller.violations.count()).toBe(0);
  });

  it(`${label}: works again after a reset and re-initialization`, async () => {
    const { driver, device } = await drive(variant);
    await driver.send(0, { readable: [header(Type.CRC32, 0)], writable: [8] });
    await driver.reset();
    expect(driver.status).toBe(0);
    expect(device.stats.ok).toBe(0);
    await driver.initialize();
    const payload = ascii('again');
    const reply = await driver.send(0, {
      readable: [header(Type.CRC32, payload.length), payload],
      writable: [8],
    });
    expect(decode(reply.written).checksum).toBe(referenceCrc32(payload));
  });
});
