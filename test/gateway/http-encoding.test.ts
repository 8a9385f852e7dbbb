import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { brotliCompressSync, constants, deflateRawSync, deflateSync, gzipSync } from 'node:zlib'
import { type Device, type Platform, startPlatform } from '../helpers/index.js'
import { latest, quarantined, rows } from '../helpers/stored.js'

/** 2026-11-23T08:00:00Z */
const T0 = 1_795_420_800_000
const LIMIT = 4096
/** Anything but printable ASCII: what a message must not quote from a binary body. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are among what is looked for
const RAW = /[\u0000-\u001f\u007f-\uffff]/

describe('HTTP ingest: Content-Encoding', () => {
  let p: Platform
  before(async () => {
    p = await startPlatform({ IOTCORE_MAX_PAYLOAD_BYTES: String(LIMIT) })
  })
  after(() => p.stop())

  const send = async (d: Device, body: Buffer | string, encoding?: string) => {
    const r = await p.postTelemetry(d, body, encoding === undefined ? {} : { 'content-encoding': encoding })
    const text = await r.text()
    return { status: r.status, headers: r.headers, text, body: JSON.parse(text) }
  }

  test('gzip, x-gzip, deflate (zlib or raw), br, identity and two codings in a row are decoded and stored', async () => {
    const d = await p.createDevice('encoded')
    const reading = (i: number) => JSON.stringify({ msgId: `e${i}`, ts: T0 + i, n: i, s: 'é😀' })
    const bodies: Array<[string, Buffer | string]> = [
      ['gzip', gzipSync(reading(0))],
      ['x-gzip', gzipSync(reading(1))],
      ['deflate', deflateSync(reading(2))],
      ['deflate', deflateRawSync(reading(3))],
      ['br', brotliCompressSync(reading(4))],
      ['identity', reading(5)],
      ['GZip', gzipSync(reading(6))],
      // Applied in this order (RFC 9110 §8.4): gzip first, then br, so br is undone first.
      ['gzip, br', brotliCompressSync(gzipSync(reading(7)))],
    ]
    for (const [encoding, body] of bodies) {
      const r = await send(d, body, encoding)
      assert.equal(r.status, 202, `${encoding}: ${r.text}`)
      assert.deepEqual(r.body, { accepted: 1 })
    }
    assert.deepEqual(await quarantined(p, d.id), [])
    assert.deepEqual(
      await rows(p, d.id),
      bodies.map((_, i) => ({ msgId: `e${i}`, ts: T0 + i, values: { n: i, s: 'é😀' } })),
    )
    assert.deepEqual(await latest(p, d.id), {
      n: { ts: T0 + 7, value: 7 },
      s: { ts: T0 + 7, value: 'é😀' },
    })
  })

  test('a decoded body is judged like any other: its bad readings are refused and quarantined as JSON', async () => {
    const d = await p.createDevice('encoded-bad')
    const body = `[{"msgId":"ok","ts":${T0},"a":1},{"msgId":"dup","values":{"a":1},"a":2}]`
    const r = await send(d, gzipSync(body), 'gzip')
    assert.equal(r.status, 202)
    assert.equal(r.body.accepted, 1)
    assert.deepEqual(await quarantined(p, d.id), [
      ['duplicate_key', true, '{"msgId":"dup","values":{"a":1},"a":2}'],
    ])
    assert.deepEqual(await rows(p, d.id), [{ msgId: 'ok', ts: T0, values: { a: 1 } }])
  })

  test('a zip bomb is 413 once its decoded size passes the limit, and quarantined as payload_too_large', async () => {
    const d = await p.createDevice('bomb')
    // deflate stops near 1,000:1, brotli goes far past it: 1,000 and 16,000 times the limit.
    const inflated = (size: number) => JSON.stringify({ pad: 'a'.repeat(size) })
    const bombs: Array<[string, Buffer]> = [
      ['gzip', gzipSync(inflated(1000 * LIMIT), { level: 9 })],
      [
        'br',
        brotliCompressSync(inflated(16_000 * LIMIT), { params: { [constants.BROTLI_PARAM_QUALITY]: 5 } }),
      ],
    ]
    for (const [encoding, bomb] of bombs) {
      assert.ok(bomb.length < LIMIT, `${encoding}: ${bomb.length} bytes sent, within the limit`)
      const r = await send(d, bomb, encoding)
      assert.equal(r.status, 413, r.text)
      assert.equal(r.body.code, 'IOT_ERR_PAYLOAD_TOO_LARGE')
      assert.match(
        r.body.message,
        new RegExp(`a ${encoding} body of ${bomb.length} bytes that decodes to more`),
      )
    }
    const q = await quarantined(p, d.id)
    assert.deepEqual(
      q.map(([reason, acked, payload]) => [reason, acked, payload]),
      [
        ['payload_too_large', false, ''],
        ['payload_too_large', false, ''],
      ],
    )
    assert.deepEqual(await rows(p, d.id), [])
  })

  test('an unsupported coding is 415 with Accept-Encoding, quarantined as unsupported_encoding as sent', async () => {
    const d = await p.createDevice('zstd')
    const r = await send(d, 'not really compress', 'compress')
    assert.equal(r.status, 415)
    assert.equal(r.body.code, 'IOT_ERR_UNSUPPORTED_ENCODING')
    assert.match(r.body.message, /Content-Encoding 'compress' is not supported/)
    assert.equal(r.headers.get('accept-encoding'), 'gzip, deflate, br')
    assert.equal((await send(d, gzipSync('{"v":1}'), 'gzip, zstd')).status, 415, 'one unknown coding of two')
    assert.deepEqual(
      (await quarantined(p, d.id)).map(([reason, acked]) => [reason, acked]),
      [
        ['unsupported_encoding', false],
        ['unsupported_encoding', false],
      ],
    )
    assert.equal((await p.quarantine(d.id)).at(-1)?.payload, 'not really compress')
    assert.deepEqual(await rows(p, d.id), [])
  })

  test('a corrupt or truncated compressed body is 400 naming the coding, quarantined as malformed_encoding', async () => {
    const d = await p.createDevice('corrupt')
    const gz = gzipSync(JSON.stringify({ msgId: 'c', v: 1 }))
    const cases: Array<[string, Buffer]> = [
      ['gzip', gz.subarray(0, gz.length - 6)],
      ['gzip', Buffer.from('{"v":1}')],
      ['deflate', Buffer.from([0x78, 0x9c, 0xff, 0xff, 0x00, 0x01])],
      ['br', Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff])],
    ]
    for (const [encoding, body] of cases) {
      const r = await send(d, body, encoding)
      assert.equal(r.status, 400, r.text)
      assert.equal(r.body.code, 'IOT_ERR_MALFORMED_ENCODING')
      assert.match(
        r.body.message,
        new RegExp(`^The body cannot be decoded as ${encoding}: .+ \\(${body.length} bytes\\)`),
      )
      assert.doesNotMatch(r.text, RAW)
    }
    const q = await quarantined(p, d.id)
    assert.deepEqual(
      q.map(([reason, acked]) => [reason, acked]),
      cases.map(() => ['malformed_encoding', false]),
    )
    assert.deepEqual(await rows(p, d.id), [])
  })

  test('a compressed body sent without Content-Encoding is malformed_json described in hex, never raw binary', async () => {
    const d = await p.createDevice('undeclared')
    const gz = gzipSync('{"v":1}')
    const r = await send(d, gz)
    assert.equal(r.status, 400)
    assert.equal(r.body.code, 'IOT_ERR_MALFORMED_JSON')
    assert.match(
      r.body.message,
      new RegExp(`${gz.length} bytes of binary, not UTF-8 text \\(starting 1f 8b 08 00`),
    )
    assert.match(r.body.message, /gzip data/)
    const br = await send(d, brotliCompressSync('{"values":{"a":1,"b":2,"c":3}}'))
    assert.equal(br.status, 400)
    assert.equal(br.body.code, 'IOT_ERR_MALFORMED_JSON')
    for (const text of [r.text, br.text]) assert.doesNotMatch(text, RAW, text)
    assert.deepEqual(
      (await quarantined(p, d.id)).map(([reason, acked]) => [reason, acked]),
      [
        ['malformed_json', false],
        ['malformed_json', false],
      ],
      'not database_rejected: the detail holds no byte PostgreSQL refuses',
    )
    const first = (await p.quarantine(d.id)).at(-1)!
    assert.deepEqual([first.payloadEncoding, first.payload], ['base64', gz.toString('base64')], 'as sent')
  })
})
