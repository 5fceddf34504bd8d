// The gateway's OpenAPI document → services, endpoints and a form model of each request; form
// values → the request's proto3 JSON. Pure (no DOM): the UI and the unit tests share it.

export interface JsonSchema {
  $ref?: string;
  type?: string | string[];
  format?: string;
  contentEncoding?: string;
  pattern?: string;
  enum?: unknown[];
  minimum?: number;
  items?: JsonSchema;
  properties?: Record<string, JsonSchema>;
  additionalProperties?: boolean | JsonSchema;
  required?: string[];
  description?: string;
}

export interface MediaType {
  schema?: JsonSchema;
}

export interface Operation {
  operationId?: string;
  summary?: string;
  description?: string;
  tags?: string[];
  requestBody?: { required?: boolean; content?: Record<string, MediaType> };
  responses?: Record<string, { content?: Record<string, MediaType> }>;
  security?: Record<string, string[]>[];
}

export interface BuildStatus {
  job?: string;
  commit?: string;
  state?: string;
  reason?: string;
  message?: string;
}

export interface ServiceStatus {
  phase?: string;
  ready?: boolean;
  reason?: string;
  message?: string;
  image?: string;
  commit?: string;
  replicas?: number;
  readyReplicas?: number;
  url?: string;
  build?: BuildStatus;
}

export interface OpenApiDoc {
  paths?: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, JsonSchema> };
  tags?: { name: string; description?: string; 'x-microplane-status'?: ServiceStatus }[];
}

export interface Endpoint {
  service: string;
  /** `Helloworld.Call`: the summary, else the operationId without the service. */
  name: string;
  path: string;
  method: string;
  streaming: boolean;
  needsAuth: boolean;
  request?: JsonSchema;
  description?: string;
}

export interface Service {
  name: string;
  status?: ServiceStatus;
  endpoints: Endpoint[];
}

const METHODS = ['post', 'get', 'put', 'patch', 'delete'];

/** The services of the document, in the order of its tags, each with its endpoints by name. */
export function servicesOf(doc: OpenApiDoc): Service[] {
  const byName = new Map<string, Service>();
  for (const tag of doc.tags ?? []) {
    if (tag && typeof tag.name === 'string') {
      byName.set(tag.name, { name: tag.name, status: tag['x-microplane-status'], endpoints: [] });
    }
  }
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const method of METHODS) {
      const op = item?.[method];
      if (!op) continue;
      const service = op.tags?.[0] ?? path.split('/')[1] ?? path;
      let entry = byName.get(service);
      if (!entry) {
        entry = { name: service, endpoints: [] };
        byName.set(service, entry);
      }
      entry.endpoints.push(endpointOf(service, path, method, op));
    }
  }
  const services = [...byName.values()].filter((s) => s.endpoints.length > 0);
  for (const s of services) s.endpoints.sort((a, b) => a.name.localeCompare(b.name));
  return services;
}

function endpointOf(service: string, path: string, method: string, op: Operation): Endpoint {
  const prefix = `${service}.`;
  const id = op.operationId?.startsWith(prefix) ? op.operationId.slice(prefix.length) : op.operationId;
  const ok = op.responses?.['200']?.content ?? {};
  return {
    service,
    name: op.summary || id || `${method.toUpperCase()} ${path}`,
    path,
    method: method.toUpperCase(),
    streaming: 'application/x-ndjson' in ok,
    // `[{}]` or `[]` make the requirement optional; `[{bearer: []}]` needs an account.
    needsAuth: (op.security ?? []).length > 0 && op.security!.every((req) => Object.keys(req).length > 0),
    request: op.requestBody?.content?.['application/json']?.schema,
    description: op.description,
  };
}

// ---------------------------------------------------------------------------------------------
// The form model

/** Message fieldsets nest at most this deep; a message deeper still is a JSON textarea. */
export const MAX_DEPTH = 4;

export type ScalarKind =
  | 'string'
  | 'bytes'
  | 'datetime'
  | 'duration'
  | 'number'
  | 'integer'
  | 'int64'
  | 'boolean'
  | 'enum';

interface FieldBase {
  /** The JSON name (the label). */
  name: string;
  /** Dotted path from the request, `inner.name`: ids and error keys. */
  path: string;
  /** What the value is, for people: `int64, sent as a string`. */
  hint: string;
  /** A wrapper type: `null` is a value too (the form omits it when empty). */
  nullable?: boolean;
}

export interface ScalarField extends FieldBase {
  kind: ScalarKind;
  /** enum: the names. */
  options?: string[];
  /** int32/uint32/int64/uint64 when known. */
  format?: string;
  minimum?: number;
}

export interface MessageField extends FieldBase {
  kind: 'message';
  typeName: string;
  fields: Field[];
}

export interface ListField extends FieldBase {
  kind: 'list';
  item: ScalarField;
}

export interface JsonField extends FieldBase {
  kind: 'json';
  /** What the JSON must be. */
  shape: 'object' | 'array' | 'any';
}

export type Field = ScalarField | MessageField | ListField | JsonField;

export interface RequestModel {
  /** The message's full name, when the request is a named message. */
  typeName?: string;
  fields: Field[];
  /** The request is not a message with fields (Struct, Value, …): JSON only. */
  freeform: boolean;
}

type Schemas = Record<string, JsonSchema>;

const REF_PREFIX = '#/components/schemas/';

function deref(schema: JsonSchema, schemas: Schemas): { schema: JsonSchema; typeName?: string } {
  if (schema.$ref === undefined) return { schema };
  const typeName = schema.$ref.startsWith(REF_PREFIX) ? schema.$ref.slice(REF_PREFIX.length) : schema.$ref;
  const target = schemas[typeName];
  // An unknown reference: anything goes.
  return { schema: target ?? {}, typeName };
}

function typesOf(schema: JsonSchema): { types: string[]; nullable: boolean } {
  const all = schema.type === undefined ? [] : Array.isArray(schema.type) ? schema.type : [schema.type];
  return { types: all.filter((t) => t !== 'null'), nullable: all.includes('null') };
}

function isMessage(schema: JsonSchema): boolean {
  const { types } = typesOf(schema);
  return types.length === 1 && types[0] === 'object' && schema.additionalProperties === false;
}

/** The form model of an endpoint's request schema. */
export function requestModel(schema: JsonSchema | undefined, schemas: Schemas = {}): RequestModel {
  if (!schema) return { fields: [], freeform: false };
  const { schema: resolved, typeName } = deref(schema, schemas);
  if (!isMessage(resolved)) return { typeName, fields: [], freeform: true };
  return { typeName, fields: fieldsOf(resolved, schemas, '', 0), freeform: false };
}

function fieldsOf(message: JsonSchema, schemas: Schemas, prefix: string, depth: number): Field[] {
  return Object.entries(message.properties ?? {}).map(([name, schema]) =>
    fieldOf(name, prefix ? `${prefix}.${name}` : name, schema, schemas, depth),
  );
}

/** The model of one field; `depth` is the nesting of the message it belongs to (top: 0). */
export function fieldOf(name: string, path: string, schema: JsonSchema, schemas: Schemas, depth = 0): Field {
  const { schema: s, typeName } = deref(schema, schemas);
  const { types, nullable } = typesOf(s);
  const base = { name, path, ...(nullable ? { nullable: true } : {}) };

  if (isMessage(s)) {
    const type = typeName ?? 'object';
    if (depth + 1 > MAX_DEPTH) {
      return { ...base, kind: 'json', shape: 'object', hint: `${type} as JSON (nested too deep for a form)` };
    }
    return { ...base, kind: 'message', typeName: type, hint: type, fields: fieldsOf(s, schemas, path, depth + 1) };
  }
  const scalar = scalarOf(s, types);
  if (scalar) return { ...base, ...scalar, hint: scalar.hint + (nullable ? ' (wrapper: empty means unset)' : '') };
  if (types.length === 1 && types[0] === 'array') {
    const items = s.items ? deref(s.items, schemas) : undefined;
    const itemScalar = items && !isMessage(items.schema) ? scalarOf(items.schema, typesOf(items.schema).types) : undefined;
    if (itemScalar) {
      return { ...base, kind: 'list', hint: `list of ${itemScalar.hint}`, item: { name, path, ...itemScalar } };
    }
    const what = items?.typeName ?? (s.items ? 'values' : 'JSON values');
    return { ...base, kind: 'json', shape: 'array', hint: `JSON array of ${what}` };
  }
  if (types.length === 1 && types[0] === 'object') {
    const values = s.additionalProperties;
    const hint =
      typeof values === 'object'
        ? `JSON object: a map of string to ${describe(values, schemas)}`
        : `JSON object${typeName ? ` (${typeName})` : ''}`;
    return { ...base, kind: 'json', shape: 'object', hint };
  }
  return { ...base, kind: 'json', shape: 'any', hint: 'any JSON value' };
}

type ScalarShape = Pick<ScalarField, 'kind' | 'hint' | 'options' | 'format' | 'minimum'>;

function scalarOf(s: JsonSchema, types: string[]): ScalarShape | undefined {
  if (Array.isArray(s.enum)) {
    const options = s.enum.filter((v): v is string => typeof v === 'string');
    return { kind: 'enum', hint: 'enum', options };
  }
  const has = (t: string) => types.includes(t);
  const only = (t: string) => types.length === 1 && types[0] === t;
  if (has('string') && has('integer')) {
    const format = s.format ?? 'int64';
    return { kind: 'int64', hint: `${format}, sent as a string`, format, ...(format.startsWith('u') ? { minimum: 0 } : {}) };
  }
  if (only('string')) {
    if (s.contentEncoding === 'base64') return { kind: 'bytes', hint: 'bytes, base64' };
    if (s.format === 'date-time') return { kind: 'datetime', hint: 'timestamp, RFC 3339 like 2024-01-31T12:00:00Z' };
    if (s.pattern !== undefined && /s\$$/.test(s.pattern)) return { kind: 'duration', hint: 'duration like 1.5s' };
    return { kind: 'string', hint: 'string' };
  }
  if (only('integer')) {
    const format = s.format ?? 'integer';
    return { kind: 'integer', hint: format, format, ...(s.minimum !== undefined ? { minimum: s.minimum } : {}) };
  }
  if (only('number')) return { kind: 'number', hint: 'number' };
  if (only('boolean')) return { kind: 'boolean', hint: 'boolean' };
  return undefined;
}

function describe(schema: JsonSchema, schemas: Schemas): string {
  const { schema: s, typeName } = deref(schema, schemas);
  if (typeName) return typeName;
  return scalarOf(s, typesOf(s).types)?.kind ?? 'JSON';
}

// ---------------------------------------------------------------------------------------------
// Form values → request JSON

/**
 * What the form holds, by field name: text for text-like inputs, numbers, enums and JSON
 * textareas; a boolean for checkboxes; an array for lists; an object for nested messages.
 */
export type RawValue = string | boolean | RawValue[] | { [name: string]: RawValue };
export type RawValues = Record<string, RawValue>;

export interface BuiltRequest {
  body: Record<string, unknown>;
  /** Error per field path (`tags[1]` for an item of a list). Empty when the body is good. */
  errors: Record<string, string>;
}

type Result = { value: unknown } | { error: string } | undefined; // undefined: omitted

/** The request body the form's values make: empty fields are left out (proto3 defaults). */
export function buildRequest(fields: Field[], values: RawValues): BuiltRequest {
  const errors: Record<string, string> = {};
  const body = buildMessage(fields, values, errors);
  return { body, errors };
}

function buildMessage(fields: Field[], values: RawValues, errors: Record<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const field of fields) {
    const raw = values[field.name];
    if (raw === undefined) continue;
    if (field.kind === 'message') {
      const inner = buildMessage(field.fields, isRecord(raw) ? raw : {}, errors);
      if (Object.keys(inner).length > 0) out[field.name] = inner;
    } else if (field.kind === 'list') {
      const items: unknown[] = [];
      (Array.isArray(raw) ? raw : []).forEach((item, i) => {
        const r = convertScalar(field.item, item);
        if (r && 'error' in r) errors[`${field.path}[${i}]`] = r.error;
        else if (r) items.push(r.value);
      });
      if (items.length > 0) out[field.name] = items;
    } else {
      const r = field.kind === 'json' ? convertJson(field, raw) : convertScalar(field, raw);
      if (r && 'error' in r) errors[field.path] = r.error;
      else if (r) out[field.name] = r.value;
    }
  }
  return out;
}

function isRecord(v: RawValue): v is { [name: string]: RawValue } {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const BASE64 = /^(?:[A-Za-z0-9+/_-]{4})*(?:[A-Za-z0-9+/_-]{2}(?:==)?|[A-Za-z0-9+/_-]{3}=?)?$/;

function convertScalar(field: ScalarField, raw: RawValue): Result {
  if (field.kind === 'boolean') return raw === true ? { value: true } : undefined;
  if (typeof raw !== 'string') return undefined;
  const text = field.kind === 'string' ? raw : raw.trim();
  if (text === '') return undefined;
  switch (field.kind) {
    case 'number': {
      const n = Number(text);
      return Number.isFinite(n) ? { value: n } : { error: 'not a number' };
    }
    case 'integer': {
      const n = Number(text);
      if (!/^[-+]?\d+$/.test(text) || !Number.isSafeInteger(n)) return { error: 'not a whole number' };
      if (field.minimum !== undefined && n < field.minimum) return { error: `must be at least ${field.minimum}` };
      return { value: n };
    }
    case 'int64': {
      const unsigned = field.minimum === 0;
      if (!(unsigned ? /^\+?\d+$/ : /^[-+]?\d+$/).test(text)) {
        return { error: unsigned ? 'not a whole number of 0 or more' : 'not a whole number' };
      }
      return { value: text.replace(/^\+/, '') };
    }
    case 'bytes':
      return BASE64.test(text) ? { value: text } : { error: 'not base64' };
    case 'enum':
      return { value: text };
    default:
      return { value: text };
  }
}

function convertJson(field: JsonField, raw: RawValue): Result {
  if (typeof raw !== 'string' || raw.trim() === '') return undefined;
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch (e) {
    return { error: `invalid JSON: ${e instanceof Error ? e.message : String(e)}` };
  }
  if (field.shape === 'object' && (typeof value !== 'object' || value === null || Array.isArray(value))) {
    return { error: 'must be a JSON object' };
  }
  if (field.shape === 'array' && !Array.isArray(value)) return { error: 'must be a JSON array' };
  return { value };
}
