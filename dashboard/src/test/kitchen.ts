// The document the gateway writes (gateway/src/openapi.rs) for the kitchen-sink fixture
// (gateway/tests/fixtures/kitchen.proto) and helloworld: every kind of field the form handles.

import type { JsonSchema, MediaType, OpenApiDoc, Operation } from '../schema';

const ref = (name: string): JsonSchema => ({ $ref: `#/components/schemas/${name}` });
const i64: JsonSchema = { type: ['string', 'integer'], format: 'int64' };
const u64: JsonSchema = { type: ['string', 'integer'], format: 'uint64' };
const i32: JsonSchema = { type: 'integer', format: 'int32' };
const u32: JsonSchema = { type: 'integer', format: 'uint32', minimum: 0 };
const color: JsonSchema = { type: ['string', 'integer'], enum: ['COLOR_UNSPECIFIED', 'RED', 'GREEN', 'BLUE', 0, 1, 2, 7] };
const message = (properties: Record<string, JsonSchema>): JsonSchema => ({
  type: 'object',
  properties,
  additionalProperties: false,
});

export const schemas: Record<string, JsonSchema> = {
  'kitchen.Inner': message({
    name: { type: 'string' },
    count: i64,
    color,
    child: ref('kitchen.Inner'),
    tags: { type: 'array', items: { type: 'string' } },
  }),
  'kitchen.Scalars': message({
    fDouble: { type: 'number' },
    fFloat: { type: 'number' },
    fInt32: i32,
    fInt64: i64,
    fUint32: u32,
    fUint64: u64,
    fSint32: i32,
    fSint64: i64,
    fFixed32: u32,
    fFixed64: u64,
    fSfixed32: i32,
    fSfixed64: i64,
    fBool: { type: 'boolean' },
    fString: { type: 'string' },
    fBytes: { type: 'string', contentEncoding: 'base64' },
  }),
  'kitchen.Kitchen': message({
    scalars: ref('kitchen.Scalars'),
    color,
    inner: ref('kitchen.Inner'),
    ids: { type: 'array', items: i64 },
    names: { type: 'array', items: { type: 'string' } },
    colors: { type: 'array', items: color },
    items: { type: 'array', items: ref('kitchen.Inner') },
    ratios: { type: 'array', items: { type: 'number' } },
    flags: { type: 'array', items: { type: 'boolean' } },
    counts: { type: 'object', additionalProperties: i32 },
    byId: { type: 'object', additionalProperties: ref('kitchen.Inner') },
    byFlag: { type: 'object', additionalProperties: { type: 'string' } },
    colorByN: { type: 'object', additionalProperties: color },
    choiceText: { type: 'string' },
    choiceNumber: i32,
    choiceInner: ref('kitchen.Inner'),
    createdAt: { type: 'string', format: 'date-time' },
    ttl: { type: 'string', pattern: '^-?[0-9]+(\\.[0-9]+)?s$' },
    attrs: { type: 'object' },
    anyValue: {},
    listValue: { type: 'array' },
    maxItems: { type: ['string', 'integer', 'null'] },
    nickname: { type: ['string', 'null'] },
    enabled: { type: ['boolean', 'null'] },
    weight: { type: ['number', 'null'] },
    port: { type: ['integer', 'null'] },
    blob: { type: ['string', 'null'], contentEncoding: 'base64' },
    ratio: { type: ['number', 'null'] },
    level: { type: ['integer', 'null'] },
    big: { type: ['string', 'integer', 'null'] },
    updateMask: { type: 'string' },
    nothing: { type: 'object', additionalProperties: false },
    stamps: { type: 'array', items: { type: 'string', format: 'date-time' } },
  }),
  'helloworld.CallRequest': message({ name: { type: 'string' } }),
  'helloworld.CallResponse': message({ message: { type: 'string' } }),
  'helloworld.StreamResponse': message({ message: { type: 'string' } }),
  'helloworld.StreamRequest': message({ name: { type: 'string' }, count: i64 }),
  GatewayError: {
    type: 'object',
    properties: { id: { type: 'string' }, code: { type: 'integer' }, detail: { type: 'string' }, status: { type: 'string' } },
    required: ['id', 'code', 'detail', 'status'],
  },
};

const error = { description: 'error', content: { 'application/json': { schema: ref('GatewayError') } } };

const op = (
  service: string,
  endpoint: string,
  input: JsonSchema,
  output: JsonSchema,
  opts: { stream?: boolean; auth?: boolean } = {},
): Record<string, Operation> => {
  const ok: Record<string, MediaType> = opts.stream
    ? { 'application/x-ndjson': { schema: output }, 'text/event-stream': { schema: { type: 'string' } } }
    : { 'application/json': { schema: output } };
  return { post: {
    operationId: `${service}.${endpoint}`,
    summary: endpoint,
    tags: [service],
    requestBody: { required: false, content: { 'application/json': { schema: input } } },
    responses: { '200': { content: ok }, default: error },
    ...(opts.auth ? { security: [{ bearer: [] }] } : {}),
  } };
};

/** The whole document, as an account of the tenant sees it. */
export function kitchenDoc(): OpenApiDoc {
  return {
    tags: [
      { name: 'helloworld', 'x-microplane-status': { phase: 'Running', ready: true, replicas: 1, readyReplicas: 1, image: 'registry/helloworld:1' } },
      { name: 'kitchen' },
    ],
    paths: {
      '/helloworld/call': op('helloworld', 'Helloworld.Call', ref('helloworld.CallRequest'), ref('helloworld.CallResponse')),
      '/helloworld/stream': op('helloworld', 'Helloworld.Stream', ref('helloworld.StreamRequest'), ref('helloworld.StreamResponse'), { stream: true, auth: true }),
      '/kitchen/kitchens/cook': op('kitchen', 'Kitchens.Cook', ref('kitchen.Kitchen'), ref('kitchen.Kitchen'), { auth: true }),
      '/kitchen/kitchens/ping': op('kitchen', 'Kitchens.Ping', { type: 'object', additionalProperties: false }, { type: 'object', additionalProperties: false }, { auth: true }),
    },
    components: { schemas },
  };
}
