import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { TelemetryBatch } from '../../src/store/index.js'
import { type Platform, startPlatform, waitFor } from '../helpers/index.js'

/** 2026-11-23T08:00:00Z */
const T0 = 1_795_420_800_000
const MIN = 60_000

describe('telemetry query rules: time bounds as a contract, aggregates that explain themselves', () => {
  let p: Platform
  let dev: { id: string; token: string }
  before(async () => {
    p = await startPlatform()
    dev = await p.createDevice('rules')
    // Minutes 0-9: temp a number, gear a string; minutes 10-11: temp a string ("n/a"), then minute 12 a number.
    const readings = [
      ...Array.from({ length: 10 }, (_, i) => ({ msgId: `r${i}`, ts: T0 + i * MIN, temp: i, gear: `g${i}` })),
      { msgId: 'r10', ts: T0 + 10 * MIN, temp: 'n/a' },
      { msgId: 'r11', ts: T0 + 11 * MIN, temp: 'n/a' },
      { msgId: 'r12', ts: T0 + 12 * MIN, temp: 12 },
    ]
    const r = await fetch(`${p.api}/devices/${dev.id}/telemetry`, {
      method: 'POST',
      headers: { authorization: `Bearer ${dev.token}` },
      body: JSON.stringify(readings),
    })
    assert.equal(r.status, 202)
    await waitFor(async () => {
      const x = await p.app.store.pool.query(
        'SELECT count(*)::int AS n FROM telemetry WHERE device_pk = (SELECT pk FROM devices WHERE id = $1)',
        [dev.id],
      )
      return x.rows[0].n === 13
    })
  })
  after(() => p.stop())

  const query = (q: string) => p.req('GET', `/api/v1/devices/${dev.id}/telemetry?${q}`)
  const values = (points: Array<{ value: unknown }>) => points.map((x) => x.value)

  test('from/to: ms or RFC 3339 with an offset, any offset naming the same instant', async () => {
    const forms = [
      [`${T0 + 2 * MIN}`, `${T0 + 4 * MIN}`],
      ['2026-11-23T08:02:00Z', '2026-11-23T08:04:00Z'],
      ['2026-11-23T10:02:00%2B02:00', '2026-11-23T03:04:00-05:00'],
      ['2026-11-23T13:47:00.000%2B05:45', '2026-11-23 08:04:00z'],
    ]
    for (const [from, to] of forms) {
      const r = await query(`keys=temp&order=asc&from=${from}&to=${to}`)
      assert.equal(r.status, 200, `${from} ${to}: ${JSON.stringify(r.body)}`)
      assert.deepEqual(values(r.body.temp), [2, 3], `${from} ${to}`)
    }
  })

  test('from/to without an offset, in a lenient form, or out of range are 400 showing the accepted forms, whatever the TZ', async () => {
    const tz = process.env.TZ
    // The platform runs in this process: Date.parse would read these in New York time.
    process.env.TZ = 'America/New_York'
    try {
      const bad: Array<[string, RegExp]> = [
        ['from=2026-11-23T08:00:00', /from=2026-11-23T08:00:00 has no UTC offset/],
        ['from=Nov 23 2026', /from=Nov 23 2026 is not an RFC 3339 date-time/],
        ['to=2026-11-23', /to=2026-11-23 is a date without a time of day/],
        ['to=2026-02-30T00:00:00Z', /2026-02 has days 01 to 28/],
        ['from=2016-12-31T23:59:60Z', /leap second/],
        ['from=2026-11-23T10:00:00+02:00', /a \+ in a URL means a space, write it as %2B/],
        ['from=-1', /from=-1 is not an RFC 3339/],
        ['to=99999999999999999', /outside 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z/],
      ]
      for (const [q, why] of bad) {
        const r = await query(`keys=temp&${q}`)
        assert.equal(r.status, 400, q)
        assert.equal(r.body.code, 'IOT_ERR_BAD_REQUEST', q)
        assert.match(r.body.message, why, q)
        assert.match(r.body.message, /ms since the epoch \(1732330000123\) or an RFC 3339 date-time/, q)
      }
      const quarantine = await p.req('GET', '/api/v1/quarantine?from=2026-11-23T08:00:00')
      assert.equal(quarantine.status, 400)
      assert.match(quarantine.body.message, /no UTC offset/)
    } finally {
      if (tz === undefined) delete process.env.TZ
      else process.env.TZ = tz
    }
  })

  test('from after to is one clear 400, for raw points, aggregates and the quarantine; from = to is an empty range', async () => {
    for (const q of [
      `keys=temp&from=${T0 + MIN}&to=${T0}`,
      `keys=temp&agg=count&interval=1m&from=${T0 + MIN}&to=${T0}`,
    ]) {
      const r = await query(q)
      assert.equal(r.status, 400, q)
      assert.equal(r.body.code, 'IOT_ERR_BAD_REQUEST')
      assert.equal(
        r.body.message,
        `from (2026-11-23T08:01:00.000Z) is after to (2026-11-23T08:00:00.000Z): the range [from, to) holds nothing`,
      )
    }
    const qr = await p.req('GET', `/api/v1/quarantine?from=${T0 + MIN}&to=${T0}`)
    assert.equal(qr.status, 400)
    assert.match(qr.body.message, /is after to/)
    const empty = await query(`keys=temp&from=${T0}&to=${T0}`)
    assert.equal(empty.status, 200)
    assert.deepEqual(empty.body, { temp: [] })
  })

  test('avg, min, max and sum on a key with only strings are 400 naming the key; count works on any key', async () => {
    for (const agg of ['avg', 'min', 'max', 'sum']) {
      const r = await query(`keys=temp,gear&agg=${agg}&interval=5m`)
      assert.equal(r.status, 400, agg)
      assert.equal(r.body.code, 'IOT_ERR_BAD_REQUEST')
      assert.match(r.body.message, new RegExp(`agg=${agg} needs numbers, and key 'gear' holds strings`))
      assert.match(r.body.message, /agg=count/)
    }
    const count = await query(`keys=gear,temp&agg=count&interval=5m&order=asc`)
    assert.equal(count.status, 200)
    assert.deepEqual(count.body.gear, [
      { ts: T0, value: 5 },
      { ts: T0 + 5 * MIN, value: 5 },
    ])
    assert.deepEqual(values(count.body.temp), [5, 5, 3])
    // A range where temp is only text is refused the same way; a key with no readings at all is simply empty.
    const text = await query(`keys=temp&agg=avg&interval=1m&from=${T0 + 10 * MIN}&to=${T0 + 12 * MIN}`)
    assert.equal(text.status, 400)
    assert.match(text.body.message, /key 'temp' holds strings/)
    const none = await query('keys=nothing&agg=avg&interval=1m')
    assert.equal(none.status, 200)
    assert.deepEqual(none.body, { nothing: [] })
  })

  test('a key named __proto__ (or constructor) is answered like any other, raw and aggregated', async () => {
    // Stored directly: what the gateways accept under such keys is the reading parser's to decide.
    const batch = new TelemetryBatch()
    batch.add(dev.id, 'proto', T0, T0, JSON.parse('{"__proto__": 5, "constructor": 6}'))
    assert.equal((await p.app.store.writeBatch(batch, [])).stored, 1)
    const raw = await query('keys=__proto__,constructor')
    assert.equal(raw.status, 200)
    assert.deepEqual(JSON.parse(JSON.stringify(raw.body)), {
      ['__proto__']: [{ ts: T0, value: 5 }],
      constructor: [{ ts: T0, value: 6 }],
    })
    assert.deepEqual(Object.keys(raw.body), ['__proto__', 'constructor'])
    const agg = await query('keys=__proto__&agg=sum&interval=1m')
    assert.deepEqual(Object.keys(agg.body), ['__proto__'])
  })

  test('a bucket with no numbers does not use up the limit: it is left out before limit applies', async () => {
    // Minute buckets from minute 10: two text-only buckets (10, 11), then 12.
    const r = await query(`keys=temp&agg=max&interval=1m&order=asc&from=${T0 + 10 * MIN}&limit=1`)
    assert.equal(r.status, 200)
    assert.deepEqual(r.body.temp, [{ ts: T0 + 12 * MIN, value: 12 }])
  })
})
