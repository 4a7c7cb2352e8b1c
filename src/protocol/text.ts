/**
 * What a string from outside may contain. PostgreSQL refuses NUL in text, and control
 * characters have no place in identifiers, names or versions (they end up in SQL, logs and
 * terminals), so both ends check text against these rules before using it.
 *
 * The one rule for text that came from the other end of a tunnel: identifiers with a control
 * character are refused (the envelope's schema), and every other string (error messages,
 * payloads) has its control characters replaced when the frame is parsed (`parseFrame`,
 * `replaceControlCharacters`), so no stored or forwarded device text carries one. Whoever
 * prints text from elsewhere on a terminal escapes it too (`escapeControlCharacters`): a
 * stored row may predate the rule, and a server may be another version.
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

/**
 * C0 controls, DEL and C1 controls (0x9B is CSI on 8-bit terminals), as a character class;
 * built with RegExp, since a control character in a regular expression literal is usually a
 * mistake (and the linter says so).
 */
export const CONTROL_CHARACTERS = '\\u0000-\\u001f\\u007f-\\u009f';
/** Direction overrides and isolates: text that reads differently from what it is. */
export const BIDI_CONTROLS = '\\u202a-\\u202e\\u2066-\\u2069';
const CONTROL = new RegExp(`[${CONTROL_CHARACTERS}]`, 'g');
const BIDI_CONTROL = new RegExp(`[${BIDI_CONTROLS}]`, 'g');
const HAS_CONTROL = new RegExp(`[${CONTROL_CHARACTERS}${BIDI_CONTROLS}]`);

/**
 * `text` without control characters: tab, line feed, vertical tab, form feed and carriage
 * return become a space (the words stay apart), any other (and a direction override) becomes
 * U+FFFD (visible, and no terminal acts on it).
 */
export function replaceControlCharacters(text: string): string {
  return text
    .replace(CONTROL, (char) => (char >= '\t' && char <= '\r' ? ' ' : '\ufffd'))
    .replace(BIDI_CONTROL, '\ufffd');
}

/** Every string in a parsed JSON value with its control characters replaced, in place; keys stay. */
export function replaceControlCharactersIn<T>(value: T): T {
  if (typeof value === 'string') return replaceControlCharacters(value) as T;
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const node = pending.pop();
    if (typeof node !== 'object' || node === null) continue;
    const record = node as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      const child = record[key];
      if (typeof child === 'string') {
        if (HAS_CONTROL.test(child)) record[key] = replaceControlCharacters(child);
      } else if (typeof child === 'object' && child !== null) pending.push(child);
    }
  }
  return value;
}

const ESCAPES: Record<string, string> = { '\t': '\\t', '\n': '\\n', '\r': '\\r' };

/**
 * `text` safe to print on a terminal: every control character (C0, DEL, C1) and direction
 * override shown as an escape (`\x1b`, `\n`, `\u202e`), so that nothing in it can move the
 * cursor, erase a line, ring the bell or set the window title. With `keepLineBreaks`, line
 * feeds stay (for a block of lines this program composed itself).
 */
export function escapeControlCharacters(text: string, options: { keepLineBreaks?: boolean } = {}): string {
  const escapeOne = (char: string) => {
    if (char === '\n' && options.keepLineBreaks) return char;
    const code = char.charCodeAt(0);
    return ESCAPES[char] ?? (code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16)}`);
  };
  return text.replace(CONTROL, escapeOne).replace(BIDI_CONTROL, escapeOne);
}
