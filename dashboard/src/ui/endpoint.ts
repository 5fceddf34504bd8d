// One endpoint: the service's status, the request form with its JSON, the call and the response.

import { HttpError, ndjson, readBody, type Gateway } from '../api';
import { h, replace, uid } from '../dom';
import { buildRequest, requestModel, type Endpoint, type JsonSchema, type Service } from '../schema';
import { renderFields } from './form';
import { statusPanel } from './status';

export interface View {
  element: HTMLElement;
  /** Focuses the view's heading (after navigation). */
  focus(): void;
  /** Stops what is in flight. */
  dispose(): void;
}

const pretty = (value: unknown) => (typeof value === 'string' ? value : JSON.stringify(value, null, 2));

export function endpointView(
  gw: Gateway,
  service: Service,
  ep: Endpoint,
  schemas: Record<string, JsonSchema>,
): View {
  const model = requestModel(ep.request, schemas);
  const fields = renderFields(model.fields);
  let controller: AbortController | undefined;

  // The request body as JSON: follows the form until edited, then sent as it is.
  const jsonId = uid('request-json');
  const json = h('textarea', { id: jsonId, class: 'code', rows: 6, spellcheck: 'false', 'aria-describedby': `${jsonId}-note` });
  const note = h('p', { class: 'hint', id: `${jsonId}-note` });
  const reset = h('button', { type: 'button', class: 'small', hidden: true, onclick: () => setEdited(false) }, 'Reset to the form');
  let edited = model.freeform;
  const setEdited = (value: boolean) => {
    edited = value || model.freeform;
    reset.hidden = !edited || model.freeform;
    json.removeAttribute('aria-invalid');
    note.textContent = model.freeform
      ? 'This request is free-form JSON: it is sent as written.'
      : edited
        ? 'Edited: this JSON is sent as it is, not the form.'
        : 'What the form sends. Edit it to send something else.';
    if (!edited) sync();
  };
  const sync = () => {
    if (!edited) json.value = JSON.stringify(buildRequest(model.fields, fields.read()).body, null, 2);
  };
  json.addEventListener('input', () => {
    if (!edited) setEdited(true);
  });

  const call = h('button', { type: 'submit', class: 'primary' }, 'Call');
  const stop = h('button', { type: 'button', hidden: true, onclick: () => controller?.abort() }, 'Stop');
  const responseHeading = uid('response');
  const output = h('div', { class: 'output' }, h('p', { class: 'hint' }, 'No call yet.'));
  const response = h(
    'section',
    { class: 'response', 'aria-labelledby': responseHeading, 'aria-live': 'polite' },
    h('h3', { id: responseHeading }, 'Response'),
    output,
  );

  const form = h(
    'form',
    { class: 'request', novalidate: true, 'aria-label': `Request to ${ep.name}` },
    h('h3', null, 'Request ', model.typeName ? h('span', { class: 'type' }, model.typeName) : null),
    model.fields.length
      ? fields.element
      : model.freeform
        ? null
        : h('p', { class: 'hint' }, 'This endpoint takes no input.'),
    h(
      'details',
      { class: 'json', open: model.freeform },
      h('summary', null, 'JSON'),
      h('label', { for: jsonId }, 'Request body (JSON)'),
      json,
      note,
      reset,
    ),
    h('div', { class: 'actions' }, call, stop),
  );
  form.addEventListener('input', (e) => {
    if (e.target !== json) sync();
  });
  form.addEventListener('change', (e) => {
    if (e.target !== json) sync();
  });
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    void send();
  });
  setEdited(edited);

  const headingId = uid('endpoint');
  const heading = h('h2', { id: headingId, tabindex: -1 }, ep.name);
  const element = h(
    'article',
    { class: 'endpoint', 'aria-labelledby': headingId },
    h(
      'header',
      null,
      heading,
      h(
        'p',
        { class: 'meta' },
        h('code', null, `${ep.method} ${ep.path}`),
        ' ',
        h('span', { class: `badge ${ep.needsAuth ? 'auth' : 'public'}` }, ep.needsAuth ? 'Requires sign-in' : 'Public'),
        ep.streaming ? [' ', h('span', { class: 'badge stream' }, 'Server-streaming')] : null,
      ),
      ep.description ? h('p', null, ep.description) : null,
    ),
    statusPanel(service.status),
    form,
    response,
  );

  /** The body to send, or undefined after showing why there is none. */
  const body = (): string | undefined => {
    if (edited) {
      const text = json.value.trim() || '{}';
      try {
        JSON.parse(text);
      } catch (e) {
        json.setAttribute('aria-invalid', 'true');
        showError('The request JSON is not valid', String(e instanceof Error ? e.message : e));
        return undefined;
      }
      return text;
    }
    const built = buildRequest(model.fields, fields.read());
    const invalid = fields.showErrors(built.errors);
    if (invalid) {
      const n = Object.keys(built.errors).length;
      showError(`Check the form: ${n} field${n === 1 ? ' is' : 's are'} not valid`);
      invalid.focus();
      return undefined;
    }
    return JSON.stringify(built.body);
  };

  function showError(title: string, detail?: unknown): void {
    replace(
      output,
      h('div', { class: 'error', role: 'alert' }, h('p', null, h('strong', null, title)), detail === undefined ? null : h('pre', { class: 'code' }, pretty(detail))),
    );
  }

  async function send(): Promise<void> {
    const payload = body();
    if (payload === undefined) return;
    controller?.abort();
    const ctl = new AbortController();
    controller = ctl;
    const started = performance.now();
    const elapsed = () => `${Math.round(performance.now() - started)} ms`;
    const statusLine = h('p', { class: 'status-line' }, 'Calling…');
    replace(output, statusLine);
    response.setAttribute('aria-busy', 'true');
    stop.hidden = !ep.streaming;
    try {
      const res = await gw.request(ep.path, {
        method: ep.method,
        headers: { 'Content-Type': 'application/json', Accept: ep.streaming ? 'application/x-ndjson' : 'application/json' },
        body: ep.method === 'GET' ? undefined : payload,
        signal: ctl.signal,
      });
      if (!res.ok) {
        const err = new HttpError(res.status, res.statusText, await readBody(res));
        const status = (err.body as { status?: unknown } | null)?.status;
        showError(`Error ${res.status}${typeof status === 'string' ? ` ${status}` : res.statusText ? ` ${res.statusText}` : ''}`, err.body);
        return;
      }
      if (!ep.streaming || !res.body) {
        const value = await readBody(res);
        const line = `${[res.status, res.statusText].filter(Boolean).join(' ')} · ${elapsed()}`;
        replace(output, h('p', { class: 'status-line' }, line), h('pre', { class: 'code' }, pretty(value)));
        return;
      }
      const list = h('ol', { class: 'messages', 'aria-label': 'Messages' });
      replace(output, statusLine, list);
      let count = 0;
      const counted = () => `${count} message${count === 1 ? '' : 's'}`;
      statusLine.textContent = 'Streaming…';
      try {
        for await (const message of ndjson(res.body)) {
          count += 1;
          // One line each: a stream can be long.
          list.append(h('li', null, h('pre', { class: 'code' }, typeof message === 'string' ? message : JSON.stringify(message))));
          statusLine.textContent = `Streaming… ${counted()}`;
        }
        statusLine.textContent = `Stream ended: ${counted()} · ${elapsed()}`;
      } catch (e) {
        if (ctl.signal.aborted) {
          statusLine.textContent = `Stopped after ${counted()}`;
        } else {
          statusLine.textContent = `Stream broken after ${counted()}`;
          output.append(h('div', { class: 'error', role: 'alert' }, h('p', null, h('strong', null, 'The stream failed: '), String(e))));
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) statusLine.textContent = 'Stopped';
      else showError('The call failed', String(e instanceof Error ? e.message : e));
    } finally {
      if (controller === ctl) {
        controller = undefined;
        response.removeAttribute('aria-busy');
        if (document.activeElement === stop) call.focus();
        stop.hidden = true;
      }
    }
  }

  return {
    element,
    focus: () => heading.focus(),
    dispose: () => controller?.abort(),
  };
}
