import assert from 'node:assert/strict'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { describe, test } from 'node:test'
import { type ErrorCode, ErrorCodes, IotError, isIotError } from '../src/errors.js'

const root = new URL('../../', import.meta.url).pathname

/** The table of docs/errors.md: code -> [status, meaning, what to do]. */
function documented(): Map<string, [number, string, string]> {
  const rows = new Map<string, [number, string, string]>()
  for (const line of readFileSync(join(root, 'docs/errors.md'), 'utf8').split('\n')) {
    const cells = line.split('|').map((c) => c.trim())
    const code = /^`(IOT_ERR_[A-Z_]+)`$/.exec(cells[1] ?? '')?.[1]
    if (code) rows.set(code, [Number(cells[2]), cells[3], cells[4]])
  }
  return rows
}

/** Every IOT_ERR_* named in src/ outside the registry itself. */
function usedInSource(): Set<string> {
  const used = new Set<string>()
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name)
      if (statSync(p).isDirectory()) walk(p)
      else if (name.endsWith('.ts') && p !== join(root, 'src/errors.ts'))
        for (const m of readFileSync(p, 'utf8').matchAll(/IOT_ERR_[A-Z_]+/g)) used.add(m[0])
    }
  }
  walk(join(root, 'src'))
  return used
}

describe('the error registry', () => {
  const registry = Object.keys(ErrorCodes)

  test('every registry code is documented in docs/errors.md with its status, and every documented code exists', () => {
    const docs = documented()
    assert.deepEqual(
      registry.filter((c) => !docs.has(c)),
      [],
      'codes missing from docs/errors.md',
    )
    assert.deepEqual(
      [...docs.keys()].filter((c) => !(c in ErrorCodes)),
      [],
      'documented codes that are not in the registry',
    )
    for (const [code, [status, meaning, todo]] of docs) {
      assert.equal(status, ErrorCodes[code as ErrorCode].status, `${code}: the status in docs/errors.md`)
      assert.ok(meaning.length > 10 && todo.length > 10, `${code}: a meaning and what to do`)
    }
  })

  test('every code the source uses is in the registry, and every registry code is used', () => {
    const used = usedInSource()
    assert.deepEqual(
      [...used].filter((c) => !(c in ErrorCodes)),
      [],
      'codes used in src/ but not in src/errors.ts',
    )
    assert.deepEqual(
      registry.filter((c) => !used.has(c)),
      [],
      'registry codes nothing uses',
    )
  })

  test('IotError fills the message from its args, takes its status from the registry and keeps its cause', () => {
    const cause = new Error('ECONNREFUSED')
    const e = new IotError('IOT_ERR_PAYLOAD_TOO_LARGE', ['300000 bytes', 262144], { cause })
    assert.equal(
      e.message,
      'The payload is too large (300000 bytes); the limit is 262144 bytes. Split it into smaller messages',
    )
    assert.equal(e.statusCode, 413)
    assert.equal(e.code, 'IOT_ERR_PAYLOAD_TOO_LARGE')
    assert.equal(e.cause, cause)
    assert.equal(new IotError('IOT_ERR_DEVICE_NOT_FOUND', 'd42').message.includes("'d42'"), true)
    assert.equal(new IotError('IOT_ERR_INTERNAL').statusCode, 500)
    assert.equal(isIotError(e, 'IOT_ERR_PAYLOAD_TOO_LARGE'), true)
    assert.equal(isIotError(e, 'IOT_ERR_QUEUE_FULL'), false)
    assert.equal(isIotError(Object.assign(new Error('x'), { code: 'IOT_ERR_QUEUE_FULL' })), false)
  })
})
