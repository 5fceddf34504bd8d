// A service's status (`x-microplane-status`): only what the gateway sent.

import { h, uid, type Child } from '../dom';
import type { ServiceStatus } from '../schema';

/** A badge for a phase or build state, coloured by how it is going. */
export function phaseBadge(phase: string): HTMLElement {
  const tone = /^(running|succeeded|ready)$/i.test(phase)
    ? 'ok'
    : /fail|error|crash/i.test(phase)
      ? 'bad'
      : 'busy';
  return h('span', { class: `badge ${tone}` }, phase);
}

function code(text: string, full = text): HTMLElement {
  return h('code', { title: full }, text);
}

const shortCommit = (c: string) => (/^[0-9a-f]{40,64}$/i.test(c) ? c.slice(0, 12) : c);

export function statusPanel(status: ServiceStatus | undefined): HTMLElement | null {
  if (!status || typeof status !== 'object') return null;
  const rows: [string, Child][] = [];
  const add = (term: string, value: Child) => rows.push([term, value]);

  if (status.phase) add('Phase', phaseBadge(status.phase));
  if (status.ready !== undefined || status.replicas !== undefined || status.readyReplicas !== undefined) {
    const parts: string[] = [];
    if (status.ready !== undefined) parts.push(status.ready ? 'yes' : 'no');
    if (status.replicas !== undefined || status.readyReplicas !== undefined) {
      parts.push(`${status.readyReplicas ?? 0}/${status.replicas ?? 0} replicas`);
    }
    add('Ready', parts.join(', '));
  }
  if (status.reason) add('Reason', status.reason);
  if (status.message) add('Message', status.message);
  if (status.image) add('Image', code(status.image));
  if (status.commit) add('Commit', code(shortCommit(status.commit), status.commit));
  if (status.url) add('URL', code(status.url));
  const b = status.build;
  if (b && typeof b === 'object') {
    const build: Child[] = [];
    if (b.state) build.push(phaseBadge(b.state), ' ');
    if (b.job) build.push('job ', code(b.job), ' ');
    if (b.commit) build.push('at ', code(shortCommit(b.commit), b.commit));
    if (b.reason || b.message) {
      build.push(h('span', { class: 'build-message' }, [b.reason, b.message].filter(Boolean).join(': ')));
    }
    if (build.length) add('Last build', build);
  }
  if (rows.length === 0) return null;

  const heading = uid('status');
  return h(
    'section',
    { class: 'status', 'aria-labelledby': heading },
    h('h3', { id: heading }, 'Service status'),
    h('dl', null, rows.map(([term, value]) => h('div', null, h('dt', null, term), h('dd', null, value)))),
  );
}
