import assert from 'node:assert/strict'
import { test } from 'node:test'
import { LineReader, TOO_LONG, parseHello } from '../../../src/gateway/jsonl/lines.js'
import { type Fuzz, fuzz } from '../../helpers/fuzz.js'

const INPUTS = 1_000_000

const HELLO = Buffer.from('{"id":"dk2m4p6r8t2v4x6z","token":"iot_3q9Xv0c8mZk1yRr2bT7wL5nH4sJ6dF0a"}')
const LINES = [
  '{"ts":1732330000123,"msgId":"truck-7-000042","lat":37.98,"lon":23.72,"speed":52.3,"rpm":2100}',
  '{"ts":"2026-11-23T08:00:00Z","msgId":"43","values":{"lat":37.99,"lon":23.72,"speed":55}}',
  '[{"msgId":"44","speed":60},{"msgId":"45","speed":61}]',
].map((l) => Buffer.from(l))

/** A stream as a device might send it: the credentials, then lines, LF or CRLF ended, some of them damaged. */
function stream(f: Fuzz): Buffer {
  if (f.r() < 0.2) return f.random(400)
  const parts: Buffer[] = [f.r() < 0.7 ? HELLO : f.mutate(HELLO)]
  const n = f.int(5)
  for (let i = 0; i < n; i++) parts.push(f.r() < 0.7 ? f.pick(LINES) : f.mutate(f.pick(LINES)))
  const ends: string[] = parts.map(() => (f.r() < 0.8 ? '\n' : '\r\n'))
  if (f.r() < 0.3) ends[ends.length - 1] = ''
  return f.mutate(Buffer.concat(parts.flatMap((p, i) => [p, Buffer.from(ends[i])])))
}

/** The lines of `b` by the framing's definition, split on the whole buffer at once. */
function reference(b: Buffer, max: number): { lines: Buffer[]; tooLong: boolean } {
  const lines: Buffer[] = []
  const strip = (l: Buffer) => (l.length > 0 && l[l.length - 1] === 0x0d ? l.subarray(0, -1) : l)
  let start = 0
  for (let nl = b.indexOf(0x0a, start); nl >= 0; nl = b.indexOf(0x0a, start)) {
    const line = strip(b.subarray(start, nl))
    if (line.length > max) return { lines, tooLong: true }
    lines.push(line)
    start = nl + 1
  }
  const last = strip(b.subarray(start))
  if (last.length > max) return { lines, tooLong: true }
  if (b.length > start) lines.push(last)
  return { lines, tooLong: false }
}

test(`the JSON-lines framing takes ${INPUTS} streams (mutated real ones, random bytes) in any split as one`, () => {
  let lines = 0
  let hellos = 0
  const n = fuzz(INPUTS, 5060, (f) => {
    const b = stream(f)
    const max = 16 + f.int(160)
    const reader = new LineReader(max)
    const got: Buffer[] = []
    let tooLong = false
    const take = (limit: number) => {
      for (let k = 0; k < limit && !tooLong; k++) {
        const l = reader.next()
        if (l === null) return
        if (l === TOO_LONG) tooLong = true
        else got.push(l)
      }
    }
    // Fed in chunks as TCP reads may split it, its owner sometimes taking only some lines before the next read
    // (as it does while it authenticates or has too many lines in flight).
    for (const chunk of f.chunks(b)) {
      if (tooLong) break
      reader.feed(chunk, 0)
      take(f.r() < 0.3 ? f.int(2) : Number.POSITIVE_INFINITY)
    }
    take(Number.POSITIVE_INFINITY)
    if (!tooLong) {
      const last = reader.end()
      if (last === TOO_LONG) tooLong = true
      else if (last !== null) got.push(last)
    }
    const want = reference(b, max)
    assert.equal(tooLong, want.tooLong)
    assert.equal(got.length, want.lines.length)
    for (let k = 0; k < got.length; k++) assert.ok(got[k].equals(want.lines[k]), `line ${k}`)
    lines += got.length
    if (got.length > 0) {
      const h = parseHello(got[0])
      if (typeof h === 'string') assert.ok(h.length > 0)
      else {
        assert.ok(h.id.length > 0 && h.token.length > 0)
        hellos++
      }
    }
  })
  assert.equal(n, INPUTS)
  assert.ok(hellos > INPUTS / 10 && lines > INPUTS, `${hellos} credentials read, ${lines} lines`)
})
