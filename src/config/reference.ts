// docs/config.md, written from the schema: every key with its type, default and meaning
// (`npm run docs:config` writes it; a test keeps the committed file in step).
import { configKeys, dictKeys, itemSchemas, keyInfo } from './introspect.js';

type Info = ReturnType<typeof keyInfo>;

function row(key: string, info: Info): string {
  const type = info.choices
    ? info.choices.map((c) => `\`${JSON.stringify(c)}\``).join(' \\| ')
    : ({ array: 'list', tuple: 'list', union: 'one of several', object: 'dict' }[info.kind] ?? info.kind);
  const fallback = info.default === undefined ? '' : `\`${JSON.stringify(info.default)}\``;
  const meaning = (info.description ?? '').replace(/\|/g, '\\|');
  return `| \`${key}\` | ${type} | ${fallback} | ${meaning} |`;
}

const TABLE_HEAD = ['| key | type | default | meaning |', '| --- | --- | --- | --- |'];

/** The keys of each kind of item a list takes (pipeline transforms, hooks). */
function listItems(list: string): string[] {
  const lines = ['', `### Items of \`${list}\``];
  for (const item of itemSchemas(list)) {
    const keys = dictKeys(item);
    const [type, ...rest] = keys.map((k) => [k, keyInfo(k, item)] as const);
    lines.push('', `\`type\`: ${type![1].choices!.map((c) => `\`${JSON.stringify(c)}\``).join(' or ')}`);
    if (rest.length) lines.push('', ...TABLE_HEAD, ...rest.map(([k, info]) => row(k, info)));
  }
  return lines;
}

export function configReference(): string {
  const lines = [
    '# Config reference',
    '',
    '<!-- Written by `npm run docs:config` from src/config/schema.ts; do not edit by hand. -->',
    '',
    "Every key a config may set, in diffengine's names. A key left out takes its default; a dict",
    'left out takes the defaults of its keys. An unknown key or a wrong type is an error naming the',
    'key and the file (or command-line option) that set it.',
  ];
  const keys = configKeys();
  const sections = [...new Set(keys.map((k) => (k.includes('.') ? k.split('.')[0]! : '')))];
  for (const section of ['', ...sections.filter(Boolean)]) {
    const own = keys.filter((k) => (section ? k.startsWith(`${section}.`) : !k.includes('.') && !sections.includes(k)));
    lines.push('', `## ${section ? `\`${section}\`` : 'Top level'}`, '', ...TABLE_HEAD);
    for (const key of own) {
      const info = keyInfo(key);
      if (info.kind !== 'object') lines.push(row(key, info));
    }
    for (const key of own.filter(
      (k) => keyInfo(k).kind === 'array' && itemSchemas(k).some((s) => s.def.type === 'object'),
    ))
      lines.push(...listItems(key));
  }
  return `${lines.join('\n')}\n`;
}
