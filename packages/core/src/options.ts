/**
 * Device options: a small declarative schema each plugin states once. The same schema validates
 * an options object from TypeScript and the `key=value,...` strings of the command line
 * (`virtkit vhost-user --device blk,path=disk.img,readonly=on`), and gives the options' type.
 *
 * A general schema library would validate objects but not coerce command-line strings from a
 * schema it can introspect, so this stays in core: small, browser-safe and dependency-free.
 */

import { OptionsError } from './errors.js';

interface OptionBase {
  /** One line for help output. */
  readonly description: string;
  /** True if the option must be given (an option with a default never is). */
  readonly required?: boolean;
}

/** A string option. */
export interface StringOption extends OptionBase {
  /** Discriminant. */
  readonly type: 'string';
  /** Value when the option is not given. */
  readonly default?: string;
  /** The value must match. */
  readonly pattern?: RegExp;
}

/** A boolean option; on the command line `on|off|true|false|yes|no|1|0`, or the bare key for true. */
export interface BooleanOption extends OptionBase {
  /** Discriminant. */
  readonly type: 'boolean';
  /** Value when the option is not given. */
  readonly default?: boolean;
}

/** An integer option within optional bounds. */
export interface IntegerOption extends OptionBase {
  /** Discriminant. */
  readonly type: 'integer';
  /** Value when the option is not given. */
  readonly default?: number;
  /** Smallest allowed value. */
  readonly min?: number;
  /** Largest allowed value. */
  readonly max?: number;
}

/** One of a fixed set of strings. */
export interface EnumOption<V extends string = string> extends OptionBase {
  /** Discriminant. */
  readonly type: 'enum';
  /** The allowed values. */
  readonly values: readonly V[];
  /** Value when the option is not given. */
  readonly default?: V;
}

/** One option's declaration. */
export type OptionSpec = StringOption | BooleanOption | IntegerOption | EnumOption;

/** A plugin's options: option name → declaration. */
export type OptionsSchema = Readonly<Record<string, OptionSpec>>;

type ValueOf<S extends OptionSpec> = S extends StringOption
  ? string
  : S extends BooleanOption
    ? boolean
    : S extends IntegerOption
      ? number
      : S extends EnumOption<infer V>
        ? V
        : never;

type IsPresent<S extends OptionSpec> = S extends { readonly default: unknown }
  ? true
  : S extends { readonly required: true }
    ? true
    : false;

/** The validated options object a schema describes. */
export type InferOptions<S extends OptionsSchema> = {
  -readonly [K in keyof S as IsPresent<S[K]> extends true ? K : never]: ValueOf<S[K]>;
} & {
  -readonly [K in keyof S as IsPresent<S[K]> extends true ? never : K]?: ValueOf<S[K]>;
};

/** Declares a schema, keeping its literal types for {@link InferOptions}. */
export function defineOptions<const S extends OptionsSchema>(schema: S): S {
  return schema;
}

const TRUE_WORDS = new Set(['on', 'true', 'yes', '1']);
const FALSE_WORDS = new Set(['off', 'false', 'no', '0']);

/**
 * Validates `input` against `schema`: unknown keys, missing required options, wrong types and
 * out-of-range values are refused with an {@link OptionsError} naming the option; defaults are
 * filled in. Strings are coerced to the declared type (command-line input), so `'on'` is a valid
 * boolean and `'4'` a valid integer.
 */
export function parseOptions<const S extends OptionsSchema>(
  schema: S,
  input: Readonly<Record<string, unknown>>,
  subject = 'device',
): InferOptions<S> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(input)) {
    if (!Object.hasOwn(schema, key)) {
      const known = Object.keys(schema);
      throw new OptionsError(
        `${subject}: unknown option '${key}'${known.length > 0 ? ` (known options: ${known.join(', ')})` : ''}`,
      );
    }
  }
  for (const [key, spec] of Object.entries(schema)) {
    const raw = Object.hasOwn(input, key) ? input[key] : undefined;
    if (raw === undefined) {
      if (spec.default !== undefined) out[key] = spec.default;
      else if (spec.required)
        throw new OptionsError(`${subject}: option '${key}' is required (${spec.description})`);
      continue;
    }
    out[key] = coerce(spec, key, raw, subject);
  }
  return out as InferOptions<S>;
}

function coerce(spec: OptionSpec, key: string, raw: unknown, subject: string): unknown {
  const fail = (expected: string): never => {
    throw new OptionsError(`${subject}: option '${key}' must be ${expected}, got ${describe(raw)}`);
  };
  switch (spec.type) {
    case 'string': {
      if (typeof raw !== 'string') return fail('a string');
      if (spec.pattern) {
        // A global or sticky pattern remembers where it last matched; every value starts afresh.
        spec.pattern.lastIndex = 0;
        if (!spec.pattern.test(raw)) return fail(`a string matching ${spec.pattern}`);
      }
      return raw;
    }
    case 'boolean': {
      if (typeof raw === 'boolean') return raw;
      if (typeof raw === 'string') {
        const word = raw.toLowerCase();
        if (TRUE_WORDS.has(word)) return true;
        if (FALSE_WORDS.has(word)) return false;
      }
      return fail('on or off');
    }
    case 'integer': {
      const value = typeof raw === 'string' && /^-?\d+$/.test(raw.trim()) ? Number(raw) : raw;
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) return fail('an integer');
      const range =
        spec.min !== undefined && spec.max !== undefined
          ? `an integer from ${spec.min} to ${spec.max}`
          : spec.min !== undefined
            ? `an integer of at least ${spec.min}`
            : `an integer of at most ${spec.max}`;
      if (spec.min !== undefined && value < spec.min) return fail(range);
      if (spec.max !== undefined && value > spec.max) return fail(range);
      return value;
    }
    case 'enum': {
      if (typeof raw !== 'string' || !spec.values.includes(raw))
        return fail(`one of ${spec.values.join(', ')}`);
      return raw;
    }
  }
}

function describe(value: unknown): string {
  if (typeof value === 'string') return `'${value}'`;
  if (value === null) return 'null';
  if (typeof value === 'object') return Array.isArray(value) ? 'an array' : 'an object';
  return String(value);
}

/**
 * Splits a command-line device argument `TYPE,key=value,flag,...` into the type and its raw
 * options. A bare `flag` means `flag=on`. Commas inside values are written `,,` (as in QEMU).
 */
export function parseDeviceArgument(argument: string): {
  type: string;
  options: Record<string, string>;
} {
  const parts: string[] = [];
  let current = '';
  for (let i = 0; i < argument.length; i++) {
    const ch = argument[i]!;
    if (ch === ',') {
      if (argument[i + 1] === ',') {
        current += ',';
        i++;
        continue;
      }
      parts.push(current);
      current = '';
      continue;
    }
    current += ch;
  }
  parts.push(current);
  const [type, ...rest] = parts;
  if (!type)
    throw new OptionsError(`device argument '${argument}' does not start with a device type`);
  const options: Record<string, string> = {};
  for (const part of rest) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = eq === -1 ? part : part.slice(0, eq);
    const value = eq === -1 ? 'on' : part.slice(eq + 1);
    if (key === '')
      throw new OptionsError(`device argument '${argument}' has an option with no name`);
    if (Object.hasOwn(options, key))
      throw new OptionsError(`${type}: option '${key}' is given twice`);
    options[key] = value;
  }
  return { type, options };
}
