import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, test } from 'node:test'
import { parsePayload } from '../../src/readings/index.js'
import { parseTimeQuery, parseTs, TS_MAX, type TsUnit } from '../../src/readings/time.js'

/** 2026-11-23T08:00:00Z */
const T0 = 1_795_420_800_000

/** `refused` is a pattern the message must match beside the accepted forms it always shows. */
type Expect = number | { refused: RegExp }
interface Case {
  ts: unknown
  unit?: TsUnit
  /** A query parameter (`from`/`to`) rather than a reading's ts. */
  query?: true
  expect: Expect
}
const no = (refused: RegExp) => ({ refused })

const CASES: Case[] = [
  { ts: 1_732_330_000_123, expect: 1_732_330_000_123 },
  { ts: 1_732_330_000_123.9, expect: 1_732_330_000_123 },
  { ts: 0, expect: 0 },
  { ts: TS_MAX, expect: TS_MAX },
  { ts: -1, expect: no(/^ts -1 is outside 1970-01-01T00:00:00Z to 9999/) },
  { ts: TS_MAX + 1, expect: no(/outside/) },
  { ts: Number.POSITIVE_INFINITY, expect: no(/outside/) },
  { ts: '2026-11-23T08:00:00Z', expect: T0 },
  { ts: '2026-11-23T10:00:00.250+02:00', expect: T0 + 250 },
  { ts: '2026-11-23T13:45:00+05:45', expect: T0 },
  { ts: '2026-11-23T03:00:00-05:00', expect: T0 },
  { ts: '2026-11-23T08:00:00-00:00', expect: T0 },
  { ts: '2026-11-23t08:00:00z', expect: T0 },
  { ts: '2026-11-23 08:00:00Z', expect: T0 },
  { ts: '2026-11-23T08:00:00.1Z', expect: T0 + 100 },
  { ts: '2026-11-23T08:00:00.123999999Z', expect: T0 + 123 },
  { ts: '2024-02-29T00:00:00Z', expect: 1_709_164_800_000 },
  { ts: '2000-02-29T00:00:00Z', expect: 951_782_400_000 },
  { ts: '1970-01-01T00:00:00Z', expect: 0 },
  { ts: '9999-12-31T23:59:59.999Z', expect: TS_MAX },
  { ts: '1', expect: no(/^ts "1" is a string of digits/) },
  { ts: '1732330000123', expect: no(/string of digits/) },
  { ts: 'Nov 23 2026', expect: no(/not an RFC 3339 date-time/) },
  { ts: 'Mon, 23 Nov 2026 08:00:00 GMT', expect: no(/not an RFC 3339 date-time/) },
  { ts: '2026-11-23T08:00:00', expect: no(/no UTC offset/) },
  { ts: '2026-11-23T08:00', expect: no(/no UTC offset/) },
  { ts: '2026-11-23', expect: no(/a date without a time/) },
  { ts: '2026-13-01T00:00:00Z', expect: no(/no month 13/) },
  { ts: '2026-00-10T00:00:00Z', expect: no(/no month 00/) },
  { ts: '2026-02-29T00:00:00Z', expect: no(/2026-02 has days 01 to 28/) },
  { ts: '2100-02-29T00:00:00Z', expect: no(/2100-02 has days 01 to 28/) },
  { ts: '2026-04-31T00:00:00Z', expect: no(/2026-04 has days 01 to 30/) },
  { ts: '2026-11-00T00:00:00Z', expect: no(/has days 01 to 30/) },
  { ts: '2026-11-23T24:00:00Z', expect: no(/hour 24/) },
  { ts: '2026-11-23T08:60:00Z', expect: no(/minute 60/) },
  { ts: '2016-12-31T23:59:60Z', expect: no(/leap second/) },
  { ts: '2026-11-23T08:00:61Z', expect: no(/second 61/) },
  { ts: '2026-11-23T08:00:00+0200', expect: no(/offset that is not ±hh:mm/) },
  { ts: '2026-11-23T08:00:00+02', expect: no(/offset that is not ±hh:mm/) },
  { ts: '2026-11-23T08:00:00+24:00', expect: no(/at most ±23:59/) },
  { ts: '2026-11-23T08:00:00.1234567891Z', expect: no(/more than 9 fractional digits/) },
  { ts: '2026-11-23T08:00:00.Z', expect: no(/not an RFC 3339/) },
  { ts: ' 2026-11-23T08:00:00Z', expect: no(/not an RFC 3339/) },
  { ts: '2026-11-23T08:00:00Z ', expect: no(/not an RFC 3339/) },
  { ts: '٢٠٢٦-11-23T08:00:00Z', expect: no(/not an RFC 3339/) },
  { ts: '1970-01-01T00:30:00+01:00', expect: no(/the instant is outside/) },
  { ts: '+002026-11-23T08:00:00Z', expect: no(/not an RFC 3339/) },
  { ts: true, expect: no(/ts is a boolean/) },
  { ts: null, expect: no(/ts is null/) },
  { ts: { s: 1 }, expect: no(/ts is an object/) },
  { ts: [T0], expect: no(/ts is an array/) },
  { ts: 1_732_330_000.123, unit: 's', expect: 1_732_330_000_123 },
  { ts: 1_732_330_000, unit: 's', expect: 1_732_330_000_000 },
  { ts: 1_732_330_000.1239, unit: 's', expect: 1_732_330_000_123 },
  { ts: '2026-11-23T08:00:00Z', unit: 's', expect: T0 },
  { ts: TS_MAX / 1000 + 1, unit: 's', expect: no(/0 to 253402300799.999 seconds/) },
  { ts: '1732330000123', query: true, expect: 1_732_330_000_123 },
  { ts: '0', query: true, expect: 0 },
  { ts: '2026-11-23T10:00:00+02:00', query: true, expect: T0 },
  { ts: '2026-11-23 08:00:00Z', query: true, expect: T0 },
  { ts: '2026-11-23T10:00:00 02:00', query: true, expect: no(/write it as %2B/) },
  { ts: '99999999999999999999', query: true, expect: no(/outside/) },
  { ts: '-5', query: true, expect: no(/not an RFC 3339/) },
  { ts: '1.5', query: true, expect: no(/not an RFC 3339/) },
  { ts: 'yesterday', query: true, expect: no(/^from=yesterday is not an RFC 3339/) },
  { ts: '2026-11-23T08:00:00', query: true, expect: no(/no UTC offset/) },
]

type Result = number | { message: string }
const evaluate = (): Result[] =>
  CASES.map((c) => (c.query ? parseTimeQuery('from', c.ts as string) : parseTs(c.ts, c.unit)))

/** The cases a reading can carry as its ts (JSON, in ms; a null ts is an absent one there). */
const READING_CASES = CASES.filter(
  (c) => !c.query && !c.unit && c.ts !== null && (typeof c.ts !== 'number' || Number.isFinite(c.ts)),
)
/** The same cases through the reading rule: the ts stored, or the refusal as `reason: detail`. */
const evaluateReadings = (): Result[] =>
  READING_CASES.map((c) => {
    const r = parsePayload(JSON.stringify({ ts: c.ts, v: 1 }), 'd', 7)
    const no = r.rejections[0]
    return no ? { message: `${no.reason}: ${no.detail}` } : r.readings[0].ts
  })

/**
 * Run as a child (TIME_CASES_CHILD set): print every case's result and this process's idea of local time, for
 * the parent to compare across time zones.
 */
if (process.env.TIME_CASES_CHILD) {
  const localMidnight = new Date(2026, 10, 23).getTime()
  process.stdout.write(JSON.stringify({ localMidnight, results: evaluate(), readings: evaluateReadings() }))
} else {
  describe('timestamps: one contract, whatever the time zone', () => {
    const label = (c: Case) =>
      `${c.query ? 'query ' : ''}${JSON.stringify(c.ts)}${c.unit ? ` (${c.unit})` : ''}`

    test('numbers are ms (or s), RFC 3339 strings need an offset; everything else is refused with the accepted forms', () => {
      const results = evaluate()
      for (const [i, c] of CASES.entries()) {
        const r = results[i]
        if (typeof c.expect === 'number') assert.equal(r, c.expect, label(c))
        else {
          assert.equal(typeof r, 'object', `${label(c)} should be refused, got ${r}`)
          const { message } = r as { message: string }
          assert.match(message, c.expect.refused, label(c))
          assert.match(message, /RFC 3339 date-time with an offset \(.?2026-11-23T08:00:00Z/, label(c))
          assert.match(
            message,
            c.query ? /ms since the epoch \(1732330000123\)/ : /since the epoch/,
            label(c),
          )
        }
      }
    })

    test("a reading's ts is parsed by the same rule: the same instant, or invalid_ts with the same message", () => {
      const readings = evaluateReadings()
      for (const [i, c] of READING_CASES.entries()) {
        const direct = parseTs(c.ts)
        const expected = typeof direct === 'number' ? direct : { message: `invalid_ts: ${direct.message}` }
        assert.deepEqual(readings[i], expected, label(c))
      }
    })

    test('the same results under TZ=UTC, America/New_York and Asia/Kathmandu', () => {
      const here = evaluate()
      const hereReadings = evaluateReadings()
      const seen = new Set<number>()
      for (const tz of ['UTC', 'America/New_York', 'Asia/Kathmandu']) {
        const env: NodeJS.ProcessEnv = { ...process.env, TZ: tz, TIME_CASES_CHILD: '1' }
        delete env.NODE_TEST_CONTEXT
        const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url)], { env, encoding: 'utf8' })
        assert.equal(child.status, 0, child.stderr)
        const out = JSON.parse(child.stdout) as {
          localMidnight: number
          results: Result[]
          readings: Result[]
        }
        seen.add(out.localMidnight)
        for (const [i, c] of CASES.entries()) assert.deepEqual(out.results[i], here[i], `${tz}: ${label(c)}`)
        for (const [i, c] of READING_CASES.entries())
          assert.deepEqual(out.readings[i], hereReadings[i], `${tz}: reading ${label(c)}`)
      }
      // Each child really ran in its own zone: local midnight fell at three different instants.
      assert.equal(seen.size, 3)
    })

    test('50,000 near-miss date-times are accepted exactly when an independent reading of RFC 3339 accepts them', () => {
      // Mutations of valid date-times (a character replaced, dropped or doubled), from a seeded generator.
      let seed = 0x5eed
      const rand = () => {
        seed = (seed * 1_103_515_245 + 12_345) >>> 0
        return seed / 2 ** 32
      }
      const alphabet = '0123456789-:.TtZz+ x'
      const bases = [
        '2026-11-23T08:00:00Z',
        '2024-02-29t23:59:59.999999999-23:59',
        '1970-01-01 00:00:00.5+00:00',
        '9999-12-31T23:59:59.999Z',
        '2026-04-30T12:30:45.12+05:45',
      ]
      let accepted = 0
      for (let i = 0; i < 50_000; i++) {
        const chars = [...bases[i % bases.length]]
        for (let k = Math.floor(rand() * 3); k >= 0; k--) {
          const at = Math.floor(rand() * chars.length)
          const op = rand()
          if (op < 0.6) chars[at] = alphabet[Math.floor(rand() * alphabet.length)]
          else if (op < 0.8) chars.splice(at, 1)
          else chars.splice(at, 0, chars[at])
        }
        const text = chars.join('')
        const got = parseTs(text)
        const want = referenceMs(text)
        assert.equal(typeof got === 'number' ? got : undefined, want, text)
        if (want !== undefined) accepted++
      }
      assert.ok(accepted > 2_000, `accepted ${accepted}`)
    })
  })
}

/** RFC 3339 §5.6 with an offset, read with a regex and Date's UTC arithmetic: the oracle for parseTs. */
function referenceMs(s: string): number | undefined {
  const m =
    /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(?:[Zz]|([+-])(\d{2}):(\d{2}))$/.exec(s)
  if (!m) return undefined
  const [y, mo, d, h, mi, se] = m.slice(1, 7).map(Number)
  if (mo < 1 || mo > 12 || h > 23 || mi > 59 || se > 59) return undefined
  const date = new Date(0)
  date.setUTCFullYear(y, mo - 1, d)
  if (date.getUTCMonth() !== mo - 1) return undefined
  const oh = Number(m[9] ?? 0)
  const om = Number(m[10] ?? 0)
  if (oh > 23 || om > 59) return undefined
  const offset = (m[8] === '-' ? -1 : 1) * (oh * 60 + om)
  const fraction = m[7] ? Number(m[7].slice(1, 4).padEnd(3, '0')) : 0
  const ms = date.getTime() + ((h * 60 + mi - offset) * 60 + se) * 1000 + fraction
  return ms >= 0 && ms <= TS_MAX ? ms : undefined
}
