/**
 * Text PostgreSQL cannot store, found before it reaches the database (where it would be a 500, a reading
 * quarantined after its ack, or worse, a silent change). One rule for every way in: the API's names and
 * attributes (store/text.ts) and the readings' keys, strings and msgIds (readings/index.ts).
 * - U+0000: `text` ends at it and refuses it (22021); `jsonb` has no escape for it (22P05).
 * - a UTF-16 surrogate without its pair (`"\ud800"` in JSON): it has no UTF-8 form, so `text` would get U+FFFD
 *   in its place, and `jsonb` refuses its `\u` escape (22P05).
 * Everything else in Unicode, surrogate pairs (emoji) included, is stored as sent.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: U+0000 is one of the characters looked for
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

/** What in `s` PostgreSQL cannot store, for a message (`U+0000 (character 5)`), or undefined if nothing. */
export function unstorable(s: string): string | undefined {
  const m = UNSTORABLE.exec(s)
  if (!m) return undefined
  const c = m[0].charCodeAt(0)
  const what = c === 0 ? 'U+0000' : `an unpaired surrogate U+${c.toString(16).toUpperCase()}`
  return `${what} (character ${m.index + 1})`
}
