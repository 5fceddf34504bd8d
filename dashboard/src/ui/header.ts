// The top bar: product, tenant (namespace) and the account.

import { HttpError, type Gateway } from '../api';
import { h, replace } from '../dom';

export function renderHeader(root: HTMLElement, gw: Gateway): void {
  const ns = h('input', {
    id: 'namespace',
    name: 'namespace',
    type: 'text',
    value: gw.namespace,
    placeholder: 'default',
    autocomplete: 'off',
    spellcheck: 'false',
    'aria-describedby': 'namespace-hint',
  });
  const nsForm = h(
    'form',
    { class: 'namespace', onsubmit: (e) => {
      e.preventDefault();
      if (ns.value.trim() === gw.namespace) return;
      gw.namespace = ns.value;
      location.reload();
    } },
    h('label', { for: 'namespace' }, 'Namespace'),
    ns,
    h('button', { type: 'submit' }, 'Switch'),
    h('span', { id: 'namespace-hint', class: 'visually-hidden' }, 'Empty: the default tenant of this host'),
  );
  const problem = h('div', { class: 'sign-in-error' });
  replace(root, h('h1', { class: 'brand' }, 'Microplane'), nsForm, account(gw, problem), problem);
}

/** The account: who is signed in, or the sign-in form (its errors go to `problem`). */
function account(gw: Gateway, problem: HTMLElement): HTMLElement {
  const tokens = gw.tokens;
  if (tokens) {
    return h(
      'div',
      { class: 'account' },
      h('span', null, 'Signed in as ', h('strong', null, tokens.clientId)),
      h('button', { type: 'button', onclick: () => {
        gw.signOut();
        location.reload();
      } }, 'Sign out'),
    );
  }
  const id = h('input', { id: 'client-id', name: 'client_id', type: 'text', autocomplete: 'username', required: true, spellcheck: 'false' });
  const secret = h('input', { id: 'client-secret', name: 'client_secret', type: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h(
    'form',
    { class: 'account sign-in', novalidate: true, 'aria-label': 'Sign in' },
    h('label', { for: 'client-id' }, 'Client ID'),
    id,
    h('label', { for: 'client-secret' }, 'Client secret'),
    secret,
    submit,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!id.value.trim() || !secret.value) {
      replace(problem, h('p', { role: 'alert' }, 'Enter a client ID and secret.'));
      (id.value.trim() ? secret : id).focus();
      return;
    }
    submit.setAttribute('aria-busy', 'true');
    try {
      await gw.signIn(id.value.trim(), secret.value);
      location.reload();
    } catch (err) {
      const text = err instanceof HttpError ? `${err.status}: ${err.detail}` : String(err);
      replace(problem, h('p', { role: 'alert' }, `Sign-in failed: ${text}`));
      secret.select();
    } finally {
      submit.removeAttribute('aria-busy');
    }
  });
  return form;
}
