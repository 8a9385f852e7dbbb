import assert from 'node:assert/strict'
import { test } from 'node:test'
import { type Decoded, decodeJson, decodeQuery } from '../../../src/gateway/osmand/decode.js'
import { unstorable } from '../../../src/lib/text.js'
import { QUARANTINE_REASONS, judgePayload } from '../../../src/readings/index.js'
import { fuzz } from '../../helpers/fuzz.js'

const INPUTS = 1_000_000

/** Real requests' parameters: Traccar Client's form, the OsmAnd query forms in Traccar's decoder tests. */
const QUERIES = [
  'id=861001000719969&lat=37.9838&lon=23.7275&timestamp=1732330000&accuracy=5.0&altitude=120.3&speed=10.1&bearing=45.5&batt=87&charge=true',
  'deviceid=123456&location=60.0,30.0&timestamp=2026-11-23T08%3A00%3A00Z&heading=90&hdop=1.2&driverUniqueId=007&rpm=933',
  'id=123456&timestamp=1377177267&cell=257,02,16,2224&cell=257,02,16,2223,-90&wifi=00-14-22-01-23-45,-80',
  'id=902064&lat=42.06288&lon=-88.23412&timestamp=1442068686579&hdop=6.0&altitude=224.0&speed=0.0',
].map((q) => Buffer.from(q))

/** Real JSON bodies: Traccar Client's location records, as in Traccar's decoder tests. */
const BODIES = [
  '{"location":{"timestamp":"2025-06-15T13:45:12.862Z","coords":{"latitude":37.4219983,"longitude":-122.084,"accuracy":5,"speed":0,"heading":-1,"altitude":5},"is_moving":false,"odometer":0,"event":"motionchange","battery":{"level":1,"is_charging":false},"activity":{"type":"still"},"extras":{"a":1}},"device_id":"48241179"}',
  '{"location":{"event":"motionchange","is_moving":false,"timestamp":"2021-07-21T08:06:34.444Z","odometer":0,"coords":{"latitude":-6.1148096,"longitude":106.6837015,"accuracy":3.8,"speed":18.67,"heading":63,"altitude":35.7},"activity":{"type":"still","confidence":100},"battery":{"is_charging":false,"level":0.79},"extras":{}},"device_id":"8737767034"}',
].map((b) => Buffer.from(b))

/** What every decode must give, whatever the input: a known reason, text PostgreSQL can store. */
function check(d: Decoded): void {
  if (d.ok) {
    assert.ok(d.imei.length > 0)
    // What the gateway does next: serialize and judge. Neither may throw.
    judgePayload(Buffer.from(JSON.stringify(d.reading)))
  } else {
    assert.ok(QUARANTINE_REASONS.includes(d.reason), d.reason)
    assert.ok(d.detail.length > 0)
    assert.equal(unstorable(d.detail), undefined, d.detail)
  }
}

test(`the OsmAnd decoders take ${INPUTS} requests (mutated real ones, random bytes) without a throw`, () => {
  for (const q of QUERIES) assert.equal(decodeQuery(q.toString()).ok, true)
  for (const b of BODIES) assert.equal(decodeJson(b).ok, true)
  const decoded = { query: 0, json: 0 }
  const n = fuzz(INPUTS, 5055, (f) => {
    // As the gateway picks: half JSON bodies, half parameter strings.
    const json = f.r() < 0.5
    const bytes = f.r() < 0.8 ? f.mutate(f.pick(json ? BODIES : QUERIES)) : f.random(300)
    const d = json ? decodeJson(bytes) : decodeQuery(bytes.toString('utf8'))
    check(d)
    if (d.ok) decoded[json ? 'json' : 'query']++
  })
  assert.equal(n, INPUTS)
  // Mutations keep many inputs decodable: the decoding is exercised, not only the refusals.
  assert.ok(decoded.query > INPUTS / 10 && decoded.json > INPUTS / 50, JSON.stringify(decoded))
})
