// Renders a request's form model (schema.ts) as labelled, keyboard-usable controls, reads their
// values back and shows per-field errors.

import { h, uid } from '../dom';
import type { Field, JsonField, ListField, MessageField, RawValue, RawValues, ScalarField } from '../schema';

interface Slot {
  control: HTMLElement;
  error: HTMLElement;
}

export interface FieldsView {
  element: HTMLElement;
  read(): RawValues;
  /** Shows `errors` (by field path) and returns the first invalid control, if any. */
  showErrors(errors: Record<string, string>): HTMLElement | undefined;
}

type Control = { element: HTMLElement; read(): RawValue };

export function renderFields(fields: Field[]): FieldsView {
  const slots = new Map<string, Slot>();
  const controls = fields.map((f) => control(f, slots));
  return {
    element: h('div', { class: 'fields' }, controls.map((c) => c.element)),
    read: () => readAll(fields, controls),
    showErrors(errors) {
      for (const slot of slots.values()) {
        slot.error.textContent = '';
        slot.control.removeAttribute('aria-invalid');
      }
      let first: HTMLElement | undefined;
      for (const [path, message] of Object.entries(errors)) {
        const item = /^(.*)\[(\d+)\]$/.exec(path);
        const slot = slots.get(item ? item[1]! : path);
        if (!slot) continue;
        const text = item ? `Item ${Number(item[2]) + 1}: ${message}` : message;
        slot.error.textContent = slot.error.textContent ? `${slot.error.textContent}; ${text}` : text;
        slot.control.setAttribute('aria-invalid', 'true');
        for (let d = slot.control.closest('details'); d; d = d.parentElement?.closest('details') ?? null) d.open = true;
        first ??= slot.control;
      }
      return first;
    },
  };
}

function readAll(fields: Field[], controls: Control[]): RawValues {
  const out: RawValues = {};
  fields.forEach((f, i) => {
    out[f.name] = controls[i]!.read();
  });
  return out;
}

function control(field: Field, slots: Map<string, Slot>): Control {
  switch (field.kind) {
    case 'message':
      return messageControl(field, slots);
    case 'list':
      return listControl(field, slots);
    case 'json':
      return jsonControl(field, slots);
    default:
      return scalarControl(field, slots);
  }
}

/** Ids of a field's control, hint and error. */
function ids(path: string) {
  const id = uid(`f-${path}`);
  return { id, hint: `${id}-hint`, error: `${id}-error` };
}

function hintAndError(field: Field, i: ReturnType<typeof ids>): HTMLElement[] {
  return [
    h('span', { class: 'hint', id: i.hint }, field.hint),
    h('span', { class: 'field-error', id: i.error }),
  ];
}

function scalarControl(field: ScalarField, slots: Map<string, Slot>): Control {
  const i = ids(field.path);
  const input = scalarInput(field, { id: i.id, 'aria-describedby': `${i.hint} ${i.error}` });
  const [hint, error] = hintAndError(field, i);
  slots.set(field.path, { control: input, error: error! });
  const label = h('label', { for: i.id }, field.name);
  const element =
    field.kind === 'boolean'
      ? h('div', { class: 'field check' }, input, label, hint, error)
      : h('div', { class: 'field' }, label, input, hint, error);
  return { element, read: () => readScalar(input) };
}

function readScalar(input: HTMLInputElement | HTMLSelectElement): RawValue {
  return input instanceof HTMLInputElement && input.type === 'checkbox' ? input.checked : input.value;
}

function scalarInput(
  field: ScalarField,
  attrs: Record<string, string>,
): HTMLInputElement | HTMLSelectElement {
  switch (field.kind) {
    case 'enum':
      return h(
        'select',
        attrs,
        h('option', { value: '' }, '(default)'),
        (field.options ?? []).map((name) => h('option', { value: name }, name)),
      );
    case 'boolean':
      return h('input', { ...attrs, type: 'checkbox' });
    case 'number':
      return h('input', { ...attrs, type: 'number', step: 'any' });
    case 'integer':
      return h('input', { ...attrs, type: 'number', step: '1', min: field.minimum });
    case 'int64':
      return h('input', { ...attrs, type: 'text', inputmode: 'numeric', autocomplete: 'off', spellcheck: 'false' });
    default: {
      const placeholder = { bytes: 'base64', datetime: '2024-01-31T12:00:00Z', duration: '1.5s' }[field.kind as string];
      return h('input', { ...attrs, type: 'text', placeholder, autocomplete: 'off' });
    }
  }
}

/**
 * A nested message: a fieldset, folded in a disclosure below the first level (recursive types
 * would otherwise unfold to the depth limit).
 */
function messageControl(field: MessageField, slots: Map<string, Slot>): Control {
  const controls = field.fields.map((f) => control(f, slots));
  const fieldset = h(
    'fieldset',
    { class: 'message' },
    h('legend', { class: 'visually-hidden' }, field.name),
    controls.length ? controls.map((c) => c.element) : h('p', { class: 'hint' }, 'No fields.'),
  );
  const element = h(
    'details',
    { class: 'message', open: !field.path.includes('.') },
    h('summary', null, h('span', { class: 'name' }, field.name), ' ', h('span', { class: 'type' }, field.typeName)),
    fieldset,
  );
  return { element, read: () => readAll(field.fields, controls) };
}

function listControl(field: ListField, slots: Map<string, Slot>): Control {
  const i = ids(field.path);
  const items = h('ul', { class: 'items' });
  const inputs: (HTMLInputElement | HTMLSelectElement)[] = [];
  const changed = () => items.dispatchEvent(new Event('input', { bubbles: true }));

  const relabel = () =>
    inputs.forEach((input, n) => {
      input.setAttribute('aria-label', `${field.name} item ${n + 1}`);
      input.parentElement?.querySelector('button')?.setAttribute('aria-label', `Remove ${field.name} item ${n + 1}`);
    });

  const add = () => {
    const input = scalarInput(field.item, { id: uid(`f-${field.path}-item`), 'aria-describedby': `${i.hint} ${i.error}` });
    const li = h('li', null, input);
    const remove = h('button', { type: 'button', class: 'small', onclick: () => {
      const n = inputs.indexOf(input);
      inputs.splice(n, 1);
      li.remove();
      relabel();
      (inputs[Math.min(n, inputs.length - 1)] ?? addButton).focus();
      changed();
    } }, 'Remove');
    li.append(remove);
    inputs.push(input);
    items.append(li);
    relabel();
    return input;
  };
  const addButton = h('button', { type: 'button', class: 'small', 'aria-label': `Add ${field.name} item`, onclick: () => {
    add().focus();
    changed();
  } }, 'Add');

  const [hint, error] = hintAndError(field, i);
  slots.set(field.path, { control: items, error: error! });
  const element = h('fieldset', { class: 'list', 'aria-describedby': `${i.hint} ${i.error}` },
    h('legend', null, field.name), items, addButton, hint, error);
  return { element, read: () => inputs.map(readScalar) };
}

function jsonControl(field: JsonField, slots: Map<string, Slot>): Control {
  const i = ids(field.path);
  const textarea = h('textarea', {
    id: i.id,
    class: 'code',
    rows: 3,
    spellcheck: 'false',
    placeholder: { object: '{}', array: '[]', any: 'null' }[field.shape],
    'aria-describedby': `${i.hint} ${i.error}`,
  });
  const [hint, error] = hintAndError(field, i);
  slots.set(field.path, { control: textarea, error: error! });
  return {
    element: h('div', { class: 'field' }, h('label', { for: i.id }, field.name), textarea, hint, error),
    read: () => textarea.value,
  };
}
