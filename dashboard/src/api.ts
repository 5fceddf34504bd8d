// The gateway, same origin: the tenant (Micro-Namespace), accounts and tokens (sessionStorage),
// calls with refresh, and NDJSON streams.

export interface Tokens {
  clientId: string;
  accessToken: string;
  refreshToken?: string;
  /** Epoch milliseconds. */
  expiresAt: number;
  scope?: string;
}

/** A non-2xx answer: the status and the body (the gateway's JSON error when it parses). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly statusText: string,
    readonly body: unknown,
  ) {
    super(`${status} ${statusText}`.trim());
  }

  /** The gateway's `detail`, else the status line. */
  get detail(): string {
    const detail = (this.body as { detail?: unknown } | null)?.detail;
    return typeof detail === 'string' && detail !== '' ? detail : this.message;
  }
}

const NAMESPACE_KEY = 'microplane.namespace';
const TOKENS_KEY = 'microplane.auth:';
/** Refresh an access token this close to its expiry. */
export const REFRESH_MARGIN_MS = 30_000;

type Fetch = (input: string, init?: RequestInit) => Promise<Response>;

export class Gateway {
  private refreshing: Promise<boolean> | undefined;
  private readonly listeners = new Set<() => void>();

  constructor(
    private readonly storage: Storage = sessionStorage,
    private readonly fetchFn: Fetch = (input, init) => fetch(input, init),
    private readonly now: () => number = Date.now,
  ) {}

  /** The tenant; '' is the gateway's default for this host. */
  get namespace(): string {
    return this.storage.getItem(NAMESPACE_KEY) ?? '';
  }

  set namespace(ns: string) {
    const value = ns.trim();
    if (value) this.storage.setItem(NAMESPACE_KEY, value);
    else this.storage.removeItem(NAMESPACE_KEY);
  }

  get tokens(): Tokens | undefined {
    const raw = this.storage.getItem(TOKENS_KEY + this.namespace);
    if (!raw) return undefined;
    try {
      const t = JSON.parse(raw) as Tokens;
      return typeof t.accessToken === 'string' && typeof t.clientId === 'string' ? t : undefined;
    } catch {
      return undefined;
    }
  }

  private save(t: Tokens | undefined): void {
    if (t) this.storage.setItem(TOKENS_KEY + this.namespace, JSON.stringify(t));
    else this.storage.removeItem(TOKENS_KEY + this.namespace);
    this.listeners.forEach((f) => f());
  }

  /** Called when the tokens change other than by signIn/signOut's callers (a failed refresh). */
  onChange(listener: () => void): void {
    this.listeners.add(listener);
  }

  private baseHeaders(): Record<string, string> {
    return this.namespace ? { 'Micro-Namespace': this.namespace } : {};
  }

  /** Signs in with the client credentials grant; throws HttpError with the gateway's detail. */
  async signIn(clientId: string, clientSecret: string): Promise<Tokens> {
    const tokens = await this.token(
      { grant_type: 'client_credentials', client_id: clientId, client_secret: clientSecret },
      clientId,
    );
    this.save(tokens);
    return tokens;
  }

  signOut(): void {
    this.save(undefined);
  }

  private async token(form: Record<string, string>, clientId: string, previous?: Tokens): Promise<Tokens> {
    const res = await this.fetchFn('/.well-known/token', {
      method: 'POST',
      headers: { ...this.baseHeaders(), 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json' },
      body: new URLSearchParams(form).toString(),
    });
    const body = await readBody(res);
    if (!res.ok) throw new HttpError(res.status, res.statusText, body);
    const t = body as { access_token?: unknown; refresh_token?: unknown; expires_in?: unknown; scope?: unknown };
    if (typeof t?.access_token !== 'string') throw new HttpError(res.status, 'no access_token in the answer', body);
    return {
      clientId,
      accessToken: t.access_token,
      refreshToken: typeof t.refresh_token === 'string' ? t.refresh_token : previous?.refreshToken,
      expiresAt: this.now() + (typeof t.expires_in === 'number' ? t.expires_in : 900) * 1000,
      ...(typeof t.scope === 'string' ? { scope: t.scope } : {}),
    };
  }

  /** Refreshes once (one refresh in flight); false and signed out when it fails. */
  private refresh(): Promise<boolean> {
    this.refreshing ??= (async () => {
      const current = this.tokens;
      if (!current?.refreshToken) return false;
      try {
        const next = await this.token(
          { grant_type: 'refresh_token', refresh_token: current.refreshToken },
          current.clientId,
          current,
        );
        this.save(next);
        return true;
      } catch {
        this.signOut();
        return false;
      }
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  /** The access token to send, refreshed when it is about to expire. */
  private async accessToken(): Promise<string | undefined> {
    let t = this.tokens;
    if (t && t.expiresAt - this.now() < REFRESH_MARGIN_MS) {
      if (t.refreshToken) await this.refresh();
      else if (t.expiresAt <= this.now()) this.signOut();
      t = this.tokens;
    }
    return t?.accessToken;
  }

  /**
   * A request to the gateway with the tenant and the account's token; a 401 to a request that
   * carried a token is retried once after a refresh (when there is a refresh token).
   */
  async request(path: string, init: RequestInit = {}): Promise<Response> {
    const send = (token: string | undefined) => {
      const headers = new Headers(init.headers);
      for (const [k, v] of Object.entries(this.baseHeaders())) headers.set(k, v);
      if (token) headers.set('Authorization', `Bearer ${token}`);
      return this.fetchFn(path, { ...init, headers });
    };
    const token = await this.accessToken();
    const res = await send(token);
    if (res.status !== 401 || !token || !this.tokens?.refreshToken) return res;
    if (!(await this.refresh())) return res;
    await res.body?.cancel().catch(() => undefined);
    return send(this.tokens?.accessToken);
  }

  /** GET a JSON document; throws HttpError on a non-2xx answer. */
  async getJson<T>(path: string): Promise<T> {
    const res = await this.request(path, { headers: { Accept: 'application/json' } });
    const body = await readBody(res);
    if (!res.ok) throw new HttpError(res.status, res.statusText, body);
    return body as T;
  }
}

/** The body as JSON when it parses, else as text ('' for none). */
export async function readBody(res: Response): Promise<unknown> {
  const text = await res.text();
  if (text === '') return '';
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The lines of an NDJSON body as they arrive: parsed JSON, or the text of a line that is not. */
export async function* ndjson(body: ReadableStream<Uint8Array>): AsyncGenerator<unknown> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let finished = false;
  const parse = (line: string) => {
    try {
      return JSON.parse(line) as unknown;
    } catch {
      return line;
    }
  };
  try {
    for (;;) {
      const { done, value } = await reader.read();
      buffer += decoder.decode(value, { stream: !done });
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (line !== '') yield parse(line);
      }
      if (done) break;
    }
    finished = true;
    if (buffer.trim() !== '') yield parse(buffer.trim());
  } finally {
    // Stopped early (the consumer broke off, or the read failed): let go of the response.
    if (!finished) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}
