// Keys that come from files lora-train did not write (safetensors headers, pickles, configs)
// must not reach JavaScript's object machinery: `obj['__proto__'] = x` replaces obj's
// prototype, and a record whose prototype is Object.prototype hands every later object the
// properties written through it. These keys are refused where they are read, and records
// keyed by untrusted names have no prototype at all.

/** Names that reach an object's prototype instead of an own property. */
export const PROTOTYPE_KEYS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** Whether a name, or any dot-separated part of it ('a.__proto__.b'), is a prototype key. */
export function touchesPrototype(name: string): boolean {
  return name.split('.').some((part) => PROTOTYPE_KEYS.has(part));
}

/** An empty record with no prototype, for keys read from a file. */
export function nullRecord<T>(): Record<string, T> {
  return Object.create(null) as Record<string, T>;
}

/** The first key that appears twice in one object of a JSON text, if any (JSON.parse keeps the
 * last silently). The text must be valid JSON. */
export function duplicateKey(json: string): string | undefined {
  const objects: (Set<string> | null)[] = []; // per open bracket: its keys, or null for an array
  for (let i = 0; i < json.length; i++) {
    const ch = json[i];
    if (ch === '{') objects.push(new Set());
    else if (ch === '[') objects.push(null);
    else if (ch === '}' || ch === ']') objects.pop();
    else if (ch === '"') {
      let end = i + 1;
      while (json[end] !== '"') end += json[end] === '\\' ? 2 : 1;
      let next = end + 1;
      while (/\s/.test(json[next] ?? '')) next++;
      const keys = objects.at(-1);
      if (json[next] === ':' && keys) {
        const key = JSON.parse(json.slice(i, end + 1)) as string;
        if (keys.has(key)) return key;
        keys.add(key);
      }
      i = end;
    }
  }
  return undefined;
}
