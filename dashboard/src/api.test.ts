import { describe, expect, it } from 'vitest';
import { Gateway, HttpError, ndjson } from './api';

class MemoryStorage implements Storage {
  private map = new Map<string, string>();
  get length() {
    return this.map.size;
  }
  clear() {
    this.map.clear();
  }
  getItem(k: string) {
    return this.map.get(k) ?? null;
  }
  key(i: number) {
    return [...this.map.keys()][i] ?? null;
  }
  removeItem(k: string) {
    this.map.delete(k);
  }
  setItem(k: string, v: string) {
    this.map.set(k, v);
  }
}

interface Sent {
  url: string;
  headers: Headers;
  body: string;
}

/** A fake gateway: answers by path from `routes`, recording what was sent. */
function fake(routes: Record<string, (req: Sent) => Response>) {
  const sent: Sent[] = [];
  const fetchFn = async (url: string, init: RequestInit = {}) => {
    const req = { url, headers: new Headers(init.headers), body: String(init.body ?? '') };
    sent.push(req);
    const route = routes[url];
    if (!route) return new Response('{"code":404}', { status: 404 });
    return route(req);
  };
  return { sent, fetchFn };
}

const json = (body: unknown, status = 200) => new Response(JSON.stringify(body), { status });
const granted = (access: string, refresh?: string, expiresIn = 900) =>
  json({ access_token: access, token_type: 'Bearer', expires_in: expiresIn, refresh_token: refresh, scope: 'admin' });
const unauthorized = () => json({ id: 'x', code: 401, detail: 'no', status: 'Unauthorized' }, 401);

describe('Gateway', () => {
  it('sends the namespace and signs in with client credentials', async () => {
    const storage = new MemoryStorage();
    const { sent, fetchFn } = fake({ '/.well-known/token': () => granted('A1', 'R1') });
    const gw = new Gateway(storage, fetchFn, () => 1000);
    gw.namespace = ' acme ';
    expect(gw.namespace).toBe('acme');
    const t = await gw.signIn('alice', 's e&cret');
    expect(t).toEqual({ clientId: 'alice', accessToken: 'A1', refreshToken: 'R1', expiresAt: 901_000, scope: 'admin' });
    expect(sent[0]!.headers.get('Micro-Namespace')).toBe('acme');
    expect(sent[0]!.headers.get('Content-Type')).toBe('application/x-www-form-urlencoded');
    expect(Object.fromEntries(new URLSearchParams(sent[0]!.body))).toEqual({
      grant_type: 'client_credentials',
      client_id: 'alice',
      client_secret: 's e&cret',
    });
    // Tokens are per namespace.
    gw.namespace = '';
    expect(gw.tokens).toBeUndefined();
    gw.namespace = 'acme';
    expect(gw.tokens?.clientId).toBe('alice');
    gw.signOut();
    expect(gw.tokens).toBeUndefined();
  });

  it('reports a failed sign-in with the detail of the error', async () => {
    const { fetchFn } = fake({ '/.well-known/token': () => json({ id: 'i', code: 401, detail: 'invalid client credentials', status: 'Unauthorized' }, 401) });
    const gw = new Gateway(new MemoryStorage(), fetchFn);
    const err = await gw.signIn('alice', 'wrong').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HttpError);
    expect((err as HttpError).status).toBe(401);
    expect((err as HttpError).detail).toBe('invalid client credentials');
    expect(gw.tokens).toBeUndefined();
  });

  it('sends no namespace header for the default tenant and no token when signed out', async () => {
    const { sent, fetchFn } = fake({ '/x': () => json({}) });
    await new Gateway(new MemoryStorage(), fetchFn).request('/x');
    expect(sent[0]!.headers.has('Micro-Namespace')).toBe(false);
    expect(sent[0]!.headers.has('Authorization')).toBe(false);
  });

  it('refreshes an access token within 30 s of its expiry', async () => {
    let now = 0;
    let n = 0;
    const { sent, fetchFn } = fake({
      '/.well-known/token': (req) => {
        n += 1;
        return new URLSearchParams(req.body).get('grant_type') === 'refresh_token' ? granted(`A${n}`, `R${n}`) : granted('A1', 'R1');
      },
      '/x': () => json({}),
    });
    const gw = new Gateway(new MemoryStorage(), fetchFn, () => now);
    await gw.signIn('alice', 's');
    now = 900_000 - 31_000;
    await gw.request('/x');
    expect(sent.at(-1)!.headers.get('Authorization')).toBe('Bearer A1');
    now = 900_000 - 29_000;
    await Promise.all([gw.request('/x'), gw.request('/x')]);
    // One refresh for both requests, with the refresh token.
    const refreshes = sent.filter((s) => s.url === '/.well-known/token').slice(1);
    expect(refreshes.map((s) => Object.fromEntries(new URLSearchParams(s.body)))).toEqual([
      { grant_type: 'refresh_token', refresh_token: 'R1' },
    ]);
    expect(sent.at(-1)!.headers.get('Authorization')).toBe('Bearer A2');
    expect(gw.tokens).toMatchObject({ clientId: 'alice', accessToken: 'A2', refreshToken: 'R2' });
  });

  it('retries a 401 once after a refresh', async () => {
    const { sent, fetchFn } = fake({
      '/.well-known/token': (req) => (new URLSearchParams(req.body).get('grant_type') === 'refresh_token' ? granted('A2') : granted('A1', 'R1')),
      '/x': (req) => (req.headers.get('Authorization') === 'Bearer A2' ? json({ ok: true }) : unauthorized()),
    });
    const gw = new Gateway(new MemoryStorage(), fetchFn);
    await gw.signIn('alice', 's');
    const res = await gw.request('/x', { method: 'POST', body: '{}' });
    expect(res.status).toBe(200);
    expect(sent.map((s) => s.url)).toEqual(['/.well-known/token', '/x', '/.well-known/token', '/x']);
    expect(sent.at(-1)!.body).toBe('{}');
    // The answer had no new refresh token: the old one is kept.
    expect(gw.tokens?.refreshToken).toBe('R1');
  });

  it('signs out when the refresh fails, and answers the 401', async () => {
    const changes: (string | undefined)[] = [];
    const { fetchFn } = fake({
      '/.well-known/token': (req) => (new URLSearchParams(req.body).get('grant_type') === 'refresh_token' ? unauthorized() : granted('A1', 'R1')),
      '/x': () => unauthorized(),
    });
    const gw = new Gateway(new MemoryStorage(), fetchFn);
    await gw.signIn('alice', 's');
    gw.onChange(() => changes.push(gw.tokens?.accessToken));
    const res = await gw.request('/x');
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ code: 401 });
    expect(gw.tokens).toBeUndefined();
    expect(changes).toEqual([undefined]);
  });

  it('does not refresh without a refresh token, and drops an expired token', async () => {
    let now = 0;
    const { sent, fetchFn } = fake({ '/.well-known/token': () => granted('A1'), '/x': () => unauthorized() });
    const gw = new Gateway(new MemoryStorage(), fetchFn, () => now);
    await gw.signIn('alice', 's');
    expect((await gw.request('/x')).status).toBe(401);
    expect(sent.map((s) => s.url)).toEqual(['/.well-known/token', '/x']);
    now = 901_000;
    await gw.request('/x');
    expect(sent.at(-1)!.headers.has('Authorization')).toBe(false);
    expect(gw.tokens).toBeUndefined();
  });

  it('reads a JSON document or throws the error', async () => {
    const { fetchFn } = fake({ '/doc': () => json({ a: 1 }), '/bad': () => new Response('oops', { status: 502, statusText: 'Bad Gateway' }) });
    const gw = new Gateway(new MemoryStorage(), fetchFn);
    expect(await gw.getJson('/doc')).toEqual({ a: 1 });
    const err = (await gw.getJson('/bad').catch((e: unknown) => e)) as HttpError;
    expect([err.status, err.body, err.detail]).toEqual([502, 'oops', '502 Bad Gateway']);
  });
});

describe('ndjson', () => {
  const stream = (chunks: string[]) => {
    const enc = new TextEncoder();
    return new ReadableStream<Uint8Array>({
      start(c) {
        for (const chunk of chunks) c.enqueue(enc.encode(chunk));
        c.close();
      },
    });
  };

  it('yields each line as it completes, across chunk boundaries and multi-byte characters', async () => {
    const euro = new TextEncoder().encode('{"m":"€"}\n');
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode('{"a":1}\n{"b"'));
        c.enqueue(new TextEncoder().encode(':2}\n\n'));
        c.enqueue(euro.slice(0, 7));
        c.enqueue(euro.slice(7));
        c.enqueue(new TextEncoder().encode('not json\n{"last":true}'));
        c.close();
      },
    });
    const out: unknown[] = [];
    for await (const m of ndjson(body)) out.push(m);
    expect(out).toEqual([{ a: 1 }, { b: 2 }, { m: '€' }, 'not json', { last: true }]);
  });

  it('cancels the body when the reader stops early', async () => {
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        c.enqueue(new TextEncoder().encode('{"n":1}\n'));
      },
      cancel() {
        cancelled = true;
      },
    });
    for await (const m of ndjson(body)) {
      expect(m).toEqual({ n: 1 });
      break;
    }
    expect(cancelled).toBe(true);
    expect(await ndjson(stream([])).next()).toEqual({ done: true, value: undefined });
  });
});
