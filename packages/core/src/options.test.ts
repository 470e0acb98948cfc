import { describe, expect, expectTypeOf, it } from 'vitest';
import { OptionsError } from './errors.js';
import { defineOptions, type InferOptions, parseDeviceArgument, parseOptions } from './options.js';

const schema = defineOptions({
  path: { type: 'string', description: 'image file', required: true },
  readonly: { type: 'boolean', description: 'read-only disk', default: false },
  queues: { type: 'integer', description: 'request queues', default: 1, min: 1, max: 16 },
  cache: { type: 'enum', description: 'cache mode', values: ['none', 'writeback'] },
  serial: { type: 'string', description: 'serial', pattern: /^[ -~]{0,20}$/ },
});

describe('parseOptions', () => {
  it('fills defaults and keeps the given values', () => {
    const options = parseOptions(schema, { path: 'disk.img', cache: 'none' }, 'blk');
    expect(options).toEqual({ path: 'disk.img', readonly: false, queues: 1, cache: 'none' });
    expectTypeOf(options).toEqualTypeOf<InferOptions<typeof schema>>();
    expectTypeOf(options.path).toEqualTypeOf<string>();
    expectTypeOf(options.cache).toEqualTypeOf<'none' | 'writeback' | undefined>();
  });

  it('coerces command-line strings', () => {
    expect(parseOptions(schema, { path: 'x', readonly: 'on', queues: '4' }).readonly).toBe(true);
    expect(parseOptions(schema, { path: 'x', readonly: 'OFF' }).readonly).toBe(false);
    expect(parseOptions(schema, { path: 'x', queues: '16' }).queues).toBe(16);
  });

  it.each([
    [{}, /blk: option 'path' is required/],
    [
      { path: 'x', bogus: 1 },
      /blk: unknown option 'bogus' \(known options: path, readonly, queues, cache, serial\)/,
    ],
    [{ path: 3 }, /option 'path' must be a string, got 3/],
    [{ path: 'x', readonly: 'maybe' }, /option 'readonly' must be on or off, got 'maybe'/],
    [{ path: 'x', queues: '0' }, /option 'queues' must be an integer from 1 to 16, got '0'/],
    [{ path: 'x', queues: 17 }, /an integer from 1 to 16/],
    [{ path: 'x', queues: 1.5 }, /must be an integer/],
    [{ path: 'x', queues: '2x' }, /must be an integer/],
    [{ path: 'x', cache: 'unsafe' }, /option 'cache' must be one of none, writeback/],
    [{ path: 'x', serial: 'a'.repeat(21) }, /option 'serial' must be a string matching/],
  ])('refuses %j with a clear message', (input, message) => {
    expect(() => parseOptions(schema, input, 'blk')).toThrow(OptionsError);
    expect(() => parseOptions(schema, input, 'blk')).toThrow(message);
  });

  it('checks every value against a global pattern from its start', () => {
    const tagged = defineOptions({
      tag: { type: 'string', description: 'tag', pattern: /^[a-z]+$/g },
    });
    for (let i = 0; i < 3; i++) expect(parseOptions(tagged, { tag: 'abc' }).tag).toBe('abc');
  });

  it('does not treat inherited properties as options', () => {
    expect(() =>
      parseOptions(schema, { path: 'x', toString: 'y' } as Record<string, unknown>),
    ).toThrow(/unknown option 'toString'/);
  });
});

describe('parseDeviceArgument', () => {
  it('splits type, key=value pairs and bare flags', () => {
    expect(parseDeviceArgument('blk,path=/tmp/a.img,readonly,serial=X')).toEqual({
      type: 'blk',
      options: { path: '/tmp/a.img', readonly: 'on', serial: 'X' },
    });
    expect(parseDeviceArgument('console,stdio')).toEqual({
      type: 'console',
      options: { stdio: 'on' },
    });
    expect(parseDeviceArgument('net')).toEqual({ type: 'net', options: {} });
  });

  it('keeps doubled commas inside values and keeps "=" after the first', () => {
    expect(parseDeviceArgument('blk,path=a,,b.img,serial=k=v')).toEqual({
      type: 'blk',
      options: { path: 'a,b.img', serial: 'k=v' },
    });
  });

  it('refuses a missing type, nameless options and repeated keys', () => {
    expect(() => parseDeviceArgument(',path=x')).toThrow(/does not start with a device type/);
    expect(() => parseDeviceArgument('blk,=x')).toThrow(/no name/);
    expect(() => parseDeviceArgument('blk,path=a,path=b')).toThrow(/given twice/);
  });
});
