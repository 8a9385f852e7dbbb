import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Platform, startPlatform } from '../helpers/index.js'

/**
 * Text PostgreSQL cannot hold: U+0000 (in text and in jsonb) and UTF-16 surrogates without their pair (jsonb
 * refuses their \u escapes; text would get U+FFFD instead of what was sent). Bodies are written out by hand:
 * JSON.stringify would escape them the same way, but the point is what arrives on the wire.
 */
describe('API: text PostgreSQL cannot store is a 400 with a code, never a 500 or an altered row', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform()
  })
  after(() => p.stop())

  const devicesNamed = async (name: string) =>
    (await p.app.store.pool.query('SELECT count(*)::int AS n FROM devices WHERE name LIKE $1', [name]))
      .rows[0].n

  test('a device name, attribute key or attribute value (nested) with U+0000 or a lone surrogate is refused; nothing is stored', async () => {
    const bodies: Array<[string, RegExp]> = [
      ['{"name":"nul-\\u0000-name"}', /body field 'name'.*U\+0000/],
      ['{"name":"lone-\\ud800-high"}', /body field 'name'.*unpaired surrogate U\+D800/],
      ['{"name":"lone-\\udc00-low"}', /body field 'name'.*unpaired surrogate U\+DC00/],
      [
        '{"name":"attr-1","attributes":{"fleet":"north\\u0000"}}',
        /body field 'attributes\.fleet' holds U\+0000 \(character 6\)/,
      ],
      [
        '{"name":"attr-2","attributes":{"a\\u0000b":1}}',
        /body field 'attributes' has a key holding U\+0000 \(character 2\)/,
      ],
      ['{"name":"attr-3","attributes":{"a":{"b":[1,"x\\udfff"]}}}', /attributes\.a\.b\.1.*U\+DFFF/],
      [
        '{"name":"attr-4","attributes":{"a":[{"\\ud83d":true}]}}',
        /body field 'attributes\.a\.0' has a key holding an unpaired surrogate U\+D83D/,
      ],
    ]
    for (const [body, why] of bodies) {
      const r = await p.req('POST', '/api/v1/devices', body)
      assert.equal(r.status, 400, body)
      assert.equal(r.body.code, 'IOT_ERR_UNSTORABLE_TEXT', body)
      assert.match(r.body.message, why, body)
    }
    assert.equal(await devicesNamed('nul-%'), 0)
    assert.equal(await devicesNamed('lone-%'), 0)
    assert.equal(await devicesNamed('attr-%'), 0)
  })

  test('surrogate pairs (emoji, CJK extension B) are ordinary text: stored and read back exactly', async () => {
    const name = 'truck \u{1F69A} \u{20000}'
    const attributes = { '\u{1F4CD}': { note: 'ok \u{1F600}', list: ['\u{10FFFF}'] } }
    const c = await p.req('POST', '/api/v1/devices', { name, attributes })
    assert.equal(c.status, 201)
    const row = await p.app.store.devices.get(c.body.id)
    assert.equal(row?.name, name)
    assert.deepEqual(row?.attributes, attributes)
  })

  test('attributes nested past the limit are a 400, not a database error', async () => {
    const deep = '{"name":"deep","attributes":{"a":' + '['.repeat(10_000) + ']'.repeat(10_000) + '}}'
    const r = await p.req('POST', '/api/v1/devices', deep)
    assert.equal(r.status, 400)
    assert.equal(r.body.code, 'IOT_ERR_BAD_REQUEST')
    assert.match(r.body.message, /attributes nest deeper than 32 levels/)
    assert.equal(await devicesNamed('deep'), 0)
  })

  test('path and query parameters with U+0000 are a 400 naming the parameter', async () => {
    const dev = await p.createDevice('params')
    const cases: Array<[string, RegExp]> = [
      ['/api/v1/devices/a%00b', /path parameter 'id'/],
      ['/api/v1/devices/a%00b/latest', /path parameter 'id'/],
      [`/api/v1/devices/${dev.id}/telemetry?keys=sp%00eed`, /query parameter 'keys'/],
      ['/api/v1/quarantine?deviceId=x%00', /query parameter 'deviceId'/],
      ['/api/v1/quarantine?reason=%00', /query parameter 'reason'/],
    ]
    for (const [path, why] of cases) {
      const r = await p.req('GET', path)
      assert.equal(r.status, 400, path)
      assert.equal(r.body.code, 'IOT_ERR_UNSTORABLE_TEXT', path)
      assert.match(r.body.message, why, path)
    }
    const del = await p.req('DELETE', '/api/v1/devices/a%00b')
    assert.equal(del.status, 400)
  })
})
