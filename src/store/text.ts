import { unstorable } from '../lib/text.js'

/** The rule is lib/text.ts's, shared with the readings; here it is applied to the API's JSON. */
export { unstorable }

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
