import './style.css';
import { Gateway } from './api';
import { h, replace } from './dom';
import { servicesOf, type OpenApiDoc, type Service } from './schema';
import { endpointView, type View } from './ui/endpoint';
import { renderHeader } from './ui/header';
import { markCurrent, renderLoadError, renderServices } from './ui/sidebar';

const gw = new Gateway();
const top = h('header', { class: 'top' });
const nav = h('nav', { class: 'services', 'aria-label': 'Services' }, h('p', { class: 'hint' }, 'Loading endpoints…'));
const main = h('main', { class: 'main', id: 'main' });
replace(
  document.getElementById('app')!,
  h('a', { class: 'skip', href: '#main', onclick: (e) => {
    e.preventDefault();
    main.focus();
  } }, 'Skip to the endpoint'),
  top,
  h('div', { class: 'layout' }, nav, main),
);
main.tabIndex = -1;

renderHeader(top, gw);
// A failed refresh signs out: show it (the page stays, with what it showed).
gw.onChange(() => renderHeader(top, gw));

let doc: OpenApiDoc | undefined;
let services: Service[] = [];
let view: View | undefined;

function route(moved: boolean): void {
  view?.dispose();
  view = undefined;
  markCurrent(nav, location.hash);
  const [, service, endpoint] = /^#\/([^/]+)\/([^/]+)$/.exec(location.hash) ?? [];
  const tenant = gw.namespace || 'the default tenant of this host';
  if (!service || !endpoint) {
    document.title = 'Microplane';
    replace(main, h('div', { class: 'welcome' },
      h('h2', null, 'API dashboard'),
      h('p', null, `Namespace: ${tenant}. Pick an endpoint to see its service and call it.`)));
    return;
  }
  if (!doc) return;
  const s = services.find((x) => x.name === decodeURIComponent(service));
  const ep = s?.endpoints.find((x) => x.name === decodeURIComponent(endpoint));
  if (!s || !ep) {
    replace(main, h('div', { class: 'welcome' },
      h('h2', null, 'Endpoint not found'),
      h('p', null, `${decodeURIComponent(service)}/${decodeURIComponent(endpoint)} is not among the endpoints you may call in ${tenant}.`),
      gw.tokens ? null : h('p', { class: 'hint' }, 'Signing in may show it.')));
    return;
  }
  document.title = `${ep.name} · Microplane`;
  view = endpointView(gw, s, ep, doc.components?.schemas ?? {});
  replace(main, view.element);
  if (moved) view.focus();
}

window.addEventListener('hashchange', () => route(true));
route(false);

gw.getJson<OpenApiDoc>('/.well-known/openapi.json').then(
  (d) => {
    doc = d;
    services = servicesOf(d);
    renderServices(nav, services, gw.tokens !== undefined);
    route(false);
  },
  (err: unknown) => renderLoadError(nav, err),
);
