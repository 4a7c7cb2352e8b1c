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

/**
 * Where the first NUL character is in a parsed JSON value (in a string or a key), as a JSON
 * pointer, or undefined. A value carrying one anywhere, even in a field nobody reads today, is
 * refused before any of it reaches a statement.
 */
export function findNul(value: unknown, path = ''): string | undefined {
  if (typeof value === 'string') return value.includes('\u0000') ? path || '/' : undefined;
  if (typeof value !== 'object' || value === null) return undefined;
  for (const [key, child] of Object.entries(value)) {
    const childPath = `${path}/${key.replaceAll('\u0000', '\\u0000')}`;
    if (key.includes('\u0000')) return childPath;
    const found = findNul(child, childPath);
    if (found !== undefined) return found;
  }
  return undefined;
}
