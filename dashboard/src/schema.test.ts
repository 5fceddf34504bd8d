import { describe, expect, it } from 'vitest';
import {
  MAX_DEPTH,
  buildRequest,
  fieldOf,
  requestModel,
  servicesOf,
  type Field,
  type JsonSchema,
  type MessageField,
} from './schema';
import { kitchenDoc, schemas } from './test/kitchen';

const kitchen = () => requestModel({ $ref: '#/components/schemas/kitchen.Kitchen' }, schemas);
const byName = (fields: Field[], name: string): Field => {
  const f = fields.find((x) => x.name === name);
  if (!f) throw new Error(`no field ${name}`);
  return f;
};

describe('servicesOf', () => {
  it('groups operations by their first tag, in tag order, with status and flags', () => {
    const services = servicesOf(kitchenDoc());
    expect(services.map((s) => s.name)).toEqual(['helloworld', 'kitchen']);
    const [hello, kit] = services;
    expect(hello!.status?.phase).toBe('Running');
    expect(kit!.status).toBeUndefined();
    expect(hello!.endpoints.map((e) => [e.name, e.path, e.method, e.streaming, e.needsAuth])).toEqual([
      ['Helloworld.Call', '/helloworld/call', 'POST', false, false],
      ['Helloworld.Stream', '/helloworld/stream', 'POST', true, true],
    ]);
    expect(kit!.endpoints.map((e) => e.name)).toEqual(['Kitchens.Cook', 'Kitchens.Ping']);
  });

  it('names endpoints by operationId without a summary, and finds untagged services', () => {
    const services = servicesOf({
      paths: {
        '/a/x': { post: { operationId: 'a.A.X', tags: ['a'] } },
        '/b/y': { post: { security: [{}] } },
      },
    });
    expect(services.map((s) => [s.name, s.endpoints[0]!.name, s.endpoints[0]!.needsAuth])).toEqual([
      ['a', 'A.X', false],
      ['b', 'POST /b/y', false],
    ]);
  });

  it('is empty for a document without paths, and leaves out tags without endpoints', () => {
    expect(servicesOf({})).toEqual([]);
    expect(servicesOf({ tags: [{ name: 'ghost' }], paths: {} })).toEqual([]);
  });
});

describe('requestModel', () => {
  it('maps every scalar kind', () => {
    const scalars = byName(kitchen().fields, 'scalars') as MessageField;
    expect(scalars.kind).toBe('message');
    expect(scalars.typeName).toBe('kitchen.Scalars');
    const kinds = Object.fromEntries(scalars.fields.map((f) => [f.name, f.kind]));
    expect(kinds).toEqual({
      fDouble: 'number',
      fFloat: 'number',
      fInt32: 'integer',
      fInt64: 'int64',
      fUint32: 'integer',
      fUint64: 'int64',
      fSint32: 'integer',
      fSint64: 'int64',
      fFixed32: 'integer',
      fFixed64: 'int64',
      fSfixed32: 'integer',
      fSfixed64: 'int64',
      fBool: 'boolean',
      fString: 'string',
      fBytes: 'bytes',
    });
    expect(byName(scalars.fields, 'fUint32')).toMatchObject({ format: 'uint32', minimum: 0 });
    expect(byName(scalars.fields, 'fUint64')).toMatchObject({ format: 'uint64', minimum: 0 });
    expect(byName(scalars.fields, 'fInt64')).toMatchObject({ hint: 'int64, sent as a string' });
    expect(byName(scalars.fields, 'fBool').path).toBe('scalars.fBool');
  });

  it('shows enums by their names only', () => {
    expect(byName(kitchen().fields, 'color')).toMatchObject({
      kind: 'enum',
      options: ['COLOR_UNSPECIFIED', 'RED', 'GREEN', 'BLUE'],
    });
  });

  it('makes lists of scalars, and JSON for lists of messages or of anything', () => {
    const f = kitchen().fields;
    expect(byName(f, 'ids')).toMatchObject({ kind: 'list', item: { kind: 'int64' } });
    expect(byName(f, 'names')).toMatchObject({ kind: 'list', item: { kind: 'string' } });
    expect(byName(f, 'colors')).toMatchObject({ kind: 'list', item: { kind: 'enum', options: ['COLOR_UNSPECIFIED', 'RED', 'GREEN', 'BLUE'] } });
    expect(byName(f, 'ratios')).toMatchObject({ kind: 'list', item: { kind: 'number' } });
    expect(byName(f, 'flags')).toMatchObject({ kind: 'list', item: { kind: 'boolean' } });
    expect(byName(f, 'stamps')).toMatchObject({ kind: 'list', item: { kind: 'datetime' } });
    expect(byName(f, 'items')).toMatchObject({ kind: 'json', shape: 'array', hint: 'JSON array of kitchen.Inner' });
    expect(byName(f, 'listValue')).toMatchObject({ kind: 'json', shape: 'array' });
  });

  it('makes JSON textareas for maps, Struct, Value and Any', () => {
    const f = kitchen().fields;
    expect(byName(f, 'counts')).toMatchObject({ kind: 'json', shape: 'object', hint: 'JSON object: a map of string to integer' });
    expect(byName(f, 'byId')).toMatchObject({ kind: 'json', shape: 'object', hint: 'JSON object: a map of string to kitchen.Inner' });
    expect(byName(f, 'colorByN')).toMatchObject({ kind: 'json', shape: 'object' });
    expect(byName(f, 'attrs')).toMatchObject({ kind: 'json', shape: 'object' });
    expect(byName(f, 'anyValue')).toMatchObject({ kind: 'json', shape: 'any' });
    const any = fieldOf('a', 'a', { type: 'object', properties: { '@type': { type: 'string' } }, required: ['@type'] }, {});
    expect(any).toMatchObject({ kind: 'json', shape: 'object' });
  });

  it('maps well-known types and wrappers to their inner type', () => {
    const f = kitchen().fields;
    expect(byName(f, 'createdAt').kind).toBe('datetime');
    expect(byName(f, 'ttl').kind).toBe('duration');
    expect(byName(f, 'updateMask').kind).toBe('string');
    expect(byName(f, 'nothing')).toMatchObject({ kind: 'message', fields: [] });
    const wrappers = Object.fromEntries(
      ['maxItems', 'nickname', 'enabled', 'weight', 'port', 'blob', 'ratio', 'level', 'big'].map((n) => {
        const w = byName(f, n);
        expect(w.nullable).toBe(true);
        return [n, w.kind];
      }),
    );
    expect(wrappers).toEqual({
      maxItems: 'int64',
      nickname: 'string',
      enabled: 'boolean',
      weight: 'number',
      port: 'integer',
      blob: 'bytes',
      ratio: 'number',
      level: 'integer',
      big: 'int64',
    });
  });

  it('nests messages as fieldsets down to MAX_DEPTH, then JSON (recursion)', () => {
    let field = byName(kitchen().fields, 'inner');
    const seen: string[] = [];
    for (;;) {
      seen.push(`${field.path}:${field.kind}`);
      if (field.kind !== 'message') break;
      expect(field.typeName).toBe('kitchen.Inner');
      field = byName(field.fields, 'child');
    }
    expect(seen).toHaveLength(MAX_DEPTH + 1);
    expect(seen.at(-1)).toBe(`inner${'.child'.repeat(MAX_DEPTH)}:json`);
    expect(field).toMatchObject({ kind: 'json', shape: 'object' });
  });

  it('tells free-form and empty requests apart', () => {
    expect(requestModel(undefined)).toEqual({ fields: [], freeform: false });
    expect(requestModel({ type: 'object', additionalProperties: false })).toEqual({ fields: [], freeform: false });
    expect(requestModel({ type: 'object' }).freeform).toBe(true);
    expect(requestModel({ $ref: '#/components/schemas/missing' }, schemas)).toMatchObject({ typeName: 'missing', freeform: true });
  });

  it('treats an unknown reference as any JSON', () => {
    expect(fieldOf('x', 'x', { $ref: '#/components/schemas/nope' }, {})).toMatchObject({ kind: 'json', shape: 'any' });
  });
});

describe('buildRequest', () => {
  const model = kitchen();

  it('omits empty fields (proto3 defaults)', () => {
    const { body, errors } = buildRequest(model.fields, {
      color: '',
      names: ['', ''],
      scalars: { fString: '', fInt32: '', fBool: false, fInt64: '  ' },
      inner: { name: '', tags: [] },
      attrs: ' ',
      enabled: false,
    });
    expect(body).toEqual({});
    expect(errors).toEqual({});
  });

  it('types numbers, keeps 64-bit integers as strings and strings as written', () => {
    const { body, errors } = buildRequest(model.fields, {
      scalars: {
        fDouble: '1.5',
        fInt32: '-3',
        fUint32: '7',
        fInt64: ' -9007199254740993 ',
        fUint64: '18446744073709551615',
        fBool: true,
        fString: ' spaced ',
        fBytes: 'aGk=',
      },
      color: 'RED',
      createdAt: '2024-01-31T12:00:00Z',
      ttl: '1.5s',
    });
    expect(errors).toEqual({});
    expect(body).toEqual({
      scalars: {
        fDouble: 1.5,
        fInt32: -3,
        fUint32: 7,
        fInt64: '-9007199254740993',
        fUint64: '18446744073709551615',
        fBool: true,
        fString: ' spaced ',
        fBytes: 'aGk=',
      },
      color: 'RED',
      createdAt: '2024-01-31T12:00:00Z',
      ttl: '1.5s',
    });
  });

  it('builds repeated and nested fields', () => {
    const { body, errors } = buildRequest(model.fields, {
      names: ['a', '', 'b'],
      ids: ['1', '2'],
      ratios: ['0.5'],
      flags: [true, false],
      colors: ['BLUE'],
      inner: { name: 'n', count: '5', child: { name: 'deeper', tags: ['x'] } },
      items: '[{"name": "i"}]',
      counts: '{"a": 1}',
      anyValue: '42',
    });
    expect(errors).toEqual({});
    expect(body).toEqual({
      names: ['a', 'b'],
      ids: ['1', '2'],
      ratios: [0.5],
      flags: [true],
      colors: ['BLUE'],
      inner: { name: 'n', count: '5', child: { name: 'deeper', tags: ['x'] } },
      items: [{ name: 'i' }],
      counts: { a: 1 },
      anyValue: 42,
    });
  });

  it('reports bad values per field, invalid JSON included', () => {
    const { body, errors } = buildRequest(model.fields, {
      scalars: { fInt32: '1.5', fUint32: '-1', fInt64: '12abc', fUint64: '-1', fDouble: 'x', fBytes: 'not base64!' },
      ids: ['1', 'two'],
      counts: '{"a": 1',
      attrs: '[1]',
      listValue: '{}',
      nickname: 'ok',
    });
    expect(Object.keys(errors).sort()).toEqual([
      'attrs',
      'counts',
      'ids[1]',
      'listValue',
      'scalars.fBytes',
      'scalars.fDouble',
      'scalars.fInt32',
      'scalars.fInt64',
      'scalars.fUint32',
      'scalars.fUint64',
    ]);
    expect(errors.counts).toMatch(/^invalid JSON: /);
    expect(errors.attrs).toBe('must be a JSON object');
    expect(errors.listValue).toBe('must be a JSON array');
    expect(errors['scalars.fUint32']).toBe('must be at least 0');
    // What is valid still builds.
    expect(body).toEqual({ ids: ['1'], nickname: 'ok' });
  });

  it('builds helloworld requests', () => {
    const call = requestModel({ $ref: '#/components/schemas/helloworld.StreamRequest' }, schemas);
    expect(buildRequest(call.fields, { name: 'John', count: '3' }).body).toEqual({ name: 'John', count: '3' });
  });

  it('ignores values of unknown shape', () => {
    const fields: Field[] = [fieldOf('n', 'n', { type: 'integer' } as JsonSchema, {})];
    expect(buildRequest(fields, { n: true, other: 'x' })).toEqual({ body: {}, errors: {} });
  });
});
