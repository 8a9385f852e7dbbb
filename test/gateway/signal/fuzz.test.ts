import assert from 'node:assert/strict'
import { test } from 'node:test'
import { decodeSignal } from '../../../src/gateway/signal/decode.js'
import { NEED_MORE, NOT_AN_OBJECT, ObjectEnd, TOO_LARGE } from '../../../src/gateway/signal/scan.js'
import { unstorable } from '../../../src/lib/text.js'
import { QUARANTINE_REASONS, judgePayload } from '../../../src/readings/index.js'
import { type Fuzz, fuzz } from '../../helpers/fuzz.js'

const INPUTS = 1_000_000
const MAX = 512

const SIGNALS = [
  '{"device_number":"356307042441013","event_code":"7000","message_date":"2026/11/23 08:00:00","latitude":"37.9838","longitude":"23.7275","driver":"nikos"}',
  '{"device_number":356307042441013,"event_code":7003,"message_date":"2026-11-23T10:00:01+02:00","latitude":37.5,"longitude":-122.25}',
  '{"device_number":"356307042441013","event_code":"7001","message_date":"2026/11/23 08:00:02","note":"a } and a \\" and a {"}',
].map((s) => Buffer.from(s))

/** Where the object ends, by the same rule as ObjectEnd, over the whole stream at once. */
function reference(b: Buffer, max: number): number {
  let depth = 0
  let inString = false
  let escaped = false
  let started = false
  for (let i = 0; i < b.length; i++) {
    if (i >= max) return TOO_LARGE
    const c = b[i]
    if (!started) {
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) continue
      if (c !== 0x7b) return NOT_AN_OBJECT
      started = true
      depth = 1
    } else if (inString) {
      if (escaped) escaped = false
      else if (c === 0x5c) escaped = true
      else if (c === 0x22) inString = false
    } else if (c === 0x22) inString = true
    else if (c === 0x7b || c === 0x5b) depth++
    else if ((c === 0x7d || c === 0x5d) && --depth === 0) return i + 1
  }
  return NEED_MORE
}

/** A random JSON value whose strings hold what a naive brace count trips on. */
function value(f: Fuzz, depth: number): unknown {
  const k = f.int(depth > 3 ? 3 : 5)
  if (k === 0) return f.pick(['}', '{', '"', '\\', '\\"}', '[', ']', 'x', '😀', '\u0000'])
  if (k === 1) return f.r() * 1000
  if (k === 2) return f.pick([true, false, null])
  if (k === 3) return Array.from({ length: f.int(3) }, () => value(f, depth + 1))
  return Object.fromEntries(Array.from({ length: f.int(3) }, (_, i) => [`k${i}}"`, value(f, depth + 1)]))
}

test(`the signal's end is found, and the signal decoded or refused, in ${INPUTS} streams (mutated real ones, random bytes, generated JSON) in any split`, () => {
  let ended = 0
  let decoded = 0
  const n = fuzz(INPUTS, 2006, (f) => {
    const kind = f.r()
    let text: Buffer | undefined
    let b: Buffer
    if (kind < 0.1) {
      // Generated JSON: the end must be exactly the object's, whatever follows it.
      text = Buffer.from(JSON.stringify({ device_number: '356307042441013', v: value(f, 0) }))
      b = Buffer.concat([Buffer.from(f.pick(['', ' ', '\r\n\t'])), text, f.random(20)])
    } else b = kind < 0.85 ? f.mutate(f.pick(SIGNALS)) : f.random(600)
    const scan = new ObjectEnd(MAX)
    let seen = 0
    let end = NEED_MORE
    let parts: Buffer[] = []
    for (const chunk of f.chunks(b)) {
      const r = scan.feed(chunk)
      if (r === NEED_MORE) {
        seen += chunk.length
        parts.push(chunk)
        continue
      }
      end = r < 0 ? r : seen + r
      if (r > 0) parts.push(chunk.subarray(0, r))
      break
    }
    assert.equal(end, reference(b, MAX))
    if (text !== undefined && text.length <= MAX - 3) assert.ok(end === b.indexOf(text) + text.length)
    if (end < 0) return
    ended++
    const d = decodeSignal(Buffer.concat(parts))
    parts = []
    if (d.ok) {
      decoded++
      judgePayload(d.reading)
    } else {
      assert.ok(QUARANTINE_REASONS.includes(d.reason), d.reason)
      assert.ok(d.detail.length > 0)
      assert.equal(unstorable(d.detail), undefined, d.detail)
    }
  })
  assert.equal(n, INPUTS)
  assert.ok(ended > INPUTS / 5 && decoded > INPUTS / 10, `${ended} ended, ${decoded} decoded`)
})
