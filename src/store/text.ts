/**
 * Text PostgreSQL cannot store, found before it reaches the database (where it would be a 500, or worse, a
 * silent change):
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

export type JsonProblem = { kind: 'text'; message: string } | { kind: 'depth'; message: string }

/**
 * The first key or string in a JSON value (nested) that PostgreSQL cannot store, or the first place it nests
 * past `maxDepth` levels, named by its path from `name` (`attributes.a.0`); undefined if all of it can be
 * stored. Walks with a list, not recursion: a deep value must not overflow the stack.
 */
export function jsonProblem(value: unknown, name: string, maxDepth: number): JsonProblem | undefined {
  const todo: Array<[unknown, string, number]> = [[value, name, 0]]
  for (let next = todo.pop(); next !== undefined; next = todo.pop()) {
    const [v, path, depth] = next
    if (typeof v === 'string') {
      const bad = unstorable(v)
      if (bad) return { kind: 'text', message: `'${path}' holds ${bad}` }
    } else if (v !== null && typeof v === 'object') {
      if (depth >= maxDepth)
        return { kind: 'depth', message: `${name} nest deeper than ${maxDepth} levels (at '${path}')` }
      if (Array.isArray(v)) {
        for (let i = v.length - 1; i >= 0; i--) todo.push([v[i], `${path}.${i}`, depth + 1])
      } else {
        const keys = Object.keys(v)
        for (const k of keys) {
          const bad = unstorable(k)
          if (bad) return { kind: 'text', message: `'${path}' has a key holding ${bad}` }
        }
        for (let i = keys.length - 1; i >= 0; i--)
          todo.push([(v as Record<string, unknown>)[keys[i]], `${path}.${keys[i]}`, depth + 1])
      }
    }
  }
  return undefined
}
