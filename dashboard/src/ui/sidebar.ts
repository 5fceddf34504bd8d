// The services the caller may call, each with its endpoints.

import { HttpError } from '../api';
import { h, replace } from '../dom';
import type { Service } from '../schema';
import { phaseBadge } from './status';

export const routeOf = (service: string, endpoint: string) =>
  `#/${encodeURIComponent(service)}/${encodeURIComponent(endpoint)}`;

export function renderServices(nav: HTMLElement, services: Service[], signedIn: boolean): void {
  if (services.length === 0) {
    replace(
      nav,
      h('div', { class: 'empty' },
        h('p', null, h('strong', null, 'No endpoints you may call')),
        h('p', { class: 'hint' }, signedIn
          ? 'Your account may call nothing in this namespace, or it has no services yet.'
          : 'Sign in to see the endpoints that need an account.')),
    );
    return;
  }
  replace(
    nav,
    services.map((s) =>
      h('section', { class: 'service' },
        h('div', { class: 'service-head' },
          h('h2', null, s.name),
          s.status?.phase ? phaseBadge(s.status.phase) : null),
        h('ul', null, s.endpoints.map((ep) => h('li', null, h('a', { href: routeOf(s.name, ep.name) }, ep.name)))),
      ),
    ),
  );
}

export function renderLoadError(nav: HTMLElement, err: unknown): void {
  const detail = err instanceof HttpError ? `${err.status}: ${err.detail}` : String(err);
  replace(nav, h('div', { class: 'error', role: 'alert' },
    h('p', null, h('strong', null, 'Could not load the endpoints')),
    h('p', null, detail)));
}

/** Marks the link of the current route. */
export function markCurrent(nav: HTMLElement, hash: string): void {
  for (const a of nav.querySelectorAll('a')) {
    if (a.getAttribute('href') === hash) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}
