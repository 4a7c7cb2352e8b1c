/**
 * What a string from outside may contain. PostgreSQL refuses NUL in text, and control
 * characters have no place in identifiers, names or versions (they end up in SQL, logs and
 * terminals), so both ends check text against these rules before using it.
 */

/** A JSON Schema pattern: no C0 control character and no DEL. */
export const PRINTABLE_PATTERN = '^[^\\u0000-\\u001f\\u007f]*$';

/**
 * True when `text` has a C0 control character or DEL; with `allowLineBreaks`, tab, line feed
 * and carriage return are text (release notes, messages).
 */
export function hasControlCharacter(text: string, options: { allowLineBreaks?: boolean } = {}): boolean {
  for (let index = 0; index < text.length; index++) {
    const code = text.charCodeAt(index);
    if (code >= 0x20 && code !== 0x7f) continue;
    if (options.allowLineBreaks && (code === 0x09 || code === 0x0a || code === 0x0d)) continue;
    return true;
  }
  return false;
}

/** With the `u` flag a surrogate pair is one code point, so only an unpaired half matches. */
const UNPAIRED_SURROGATE = /\p{Surrogate}/u;

/** NUL, which PostgreSQL refuses in text, or an unpaired surrogate, which it would silently replace. */
function isForbiddenText(text: string): boolean {
  return text.includes('\u0000') || UNPAIRED_SURROGATE.test(text);
}

/**
 * Where the first forbidden character (NUL, unpaired surrogate) is in a parsed JSON value, in a
 * string or a key, as a JSON pointer; undefined when there is none. A value carrying one
 * anywhere, even in a field nobody reads today, is refused before any of it reaches a
 * statement. Iterative: a frame or body nested thousands deep must not overflow the stack.
 */
export function findForbiddenCharacter(value: unknown): string | undefined {
  const pending: [unknown, string][] = [[value, '']];
  while (pending.length > 0) {
    const [node, path] = pending.pop()!;
    if (typeof node === 'string') {
      if (isForbiddenText(node)) return path || '/';
      continue;
    }
    if (typeof node !== 'object' || node === null) continue;
    const entries = Object.entries(node);
    for (let index = entries.length - 1; index >= 0; index--) {
      const [key, child] = entries[index]!;
      const childPath = `${path}/${JSON.stringify(key).slice(1, -1)}`;
      if (isForbiddenText(key)) return childPath;
      pending.push([child, childPath]);
    }
  }
  return undefined;
}
