import assert from 'node:assert/strict'
import { request } from 'node:http'
import { after, before, describe, test } from 'node:test'
import { type Device, type Platform, startPlatform, waitFor } from '../../helpers/index.js'
import { holdQueueWrites } from '../../helpers/queue-lock.js'
import { drained, rows } from '../../helpers/stored.js'
import { TcpClient } from '../../helpers/tcp.js'

const IMEI = '861001000719969'

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  text: string
  /** The error body's code, if the answer is an error. */
  code?: string
  message?: string
}

/** One HTTP request on its own connection, from `localAddress` if given. */
function send(
  port: number,
  opts: {
    method?: string
    path: string
    headers?: Record<string, string>
    body?: string | Buffer
    localAddress?: string
  },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method: opts.method ?? 'GET',
        path: opts.path,
        headers: opts.headers,
        localAddress: opts.localAddress,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString()
          const a: Answer = { status: res.statusCode!, headers: res.headers, text }
          if (res.statusCode !== 200) Object.assign(a, JSON.parse(text))
          resolve(a)
        })
      },
    )
    req.on('error', reject)
    req.end(opts.body)
  })
}

/** The form body Traccar Client posts (traccar-client-sdk's HttpUploader: submitForm, speed in knots). */
const FORM = {
  id: IMEI,
  lat: '37.9838',
  lon: '23.7275',
  timestamp: '1732330000',
  accuracy: '5.0',
  altitude: '120.3',
  speed: '10.1',
  bearing: '45.5',
  batt: '87',
  charge: 'true',
  battery_temp: '31.5',
}
const form = (over: Record<string, string> = {}) => new URLSearchParams({ ...FORM, ...over }).toString()

/** A location record as Traccar Client's JSON upload carries it (Traccar's OsmAndProtocolDecoderTest sample). */
const LOCATION = {
  location: {
    event: 'motionchange',
    is_moving: false,
    uuid: '0e9a2473-a9a7-4c00-997b-fb97d2154e75',
    timestamp: '2021-07-21T08:06:34.444Z',
    odometer: 0,
    coords: {
      latitude: -6.1148096,
      longitude: 106.6837015,
      accuracy: 3.8,
      speed: 18.67,
      speed_accuracy: 0.26,
      heading: 63,
      heading_accuracy: 0.28,
      altitude: 35.7,
      altitude_accuracy: 3.8,
    },
    activity: { type: 'still', confidence: 100 },
    battery: { is_charging: false, level: 0.79 },
    extras: {},
  },
  device_id: IMEI,
}

describe('OsmAnd (Traccar Client) over HTTP', () => {
  let p: Platform
  let dev: Device
  let port: number
  before(async () => {
    p = await startPlatform({ IOTCORE_OSMAND_PORT: '0', IOTCORE_MAX_PAYLOAD_BYTES: '4096' })
    dev = await p.createDevice('phone', { imei: IMEI })
    port = p.app.osmand!.port
  })
  after(() => p.stop())

  const stored = (msgId: string) =>
    waitFor(async () => (await rows(p, dev.id)).find((r) => r.msgId === msgId))
  const refusals = (reason: string) => p.metric('iotcore_device_refusals_total', `reason="${reason}"`)
  const post = (body: string | Buffer, type = 'application/x-www-form-urlencoded', localAddress?: string) =>
    send(port, { method: 'POST', path: '/', headers: { 'content-type': type }, body, localAddress })

  test("a fix posted as Traccar Client's form lands as a position in our units: knots become km/h, exactly", async () => {
    const r = await post(form())
    assert.equal(r.status, 200)
    assert.equal(r.text, '')
    const row = await stored('osmand-1732330000000')
    assert.equal(row.ts, 1732330000000)
    assert.deepEqual(row.values, {
      lat: 37.9838,
      lon: 23.7275,
      accuracy: 5,
      alt: 120.3,
      // 10.1 knots x 1.852 = 18.7052 km/h (in binary floating point 10.1 * 1.852 is 18.705199999999998).
      speed: 18.7052,
      heading: 45.5,
      batt: 87,
      charge: true,
      battery_temp: 31.5,
    })
  })

  test('the query form by GET: deviceid, location=lat,lon, an RFC 3339 timestamp, heading, hdop, and other parameters as values', async () => {
    const query =
      `deviceid=${IMEI}&location=60.0,30.0&timestamp=2026-11-23T08%3A00%3A00Z&heading=90&hdop=1.2` +
      '&driverUniqueId=007&ignition=true&rpm=933&fuel=24.5&iccid=89310410106543789301&valid=1'
    const r = await send(port, { path: `/?${query}` })
    assert.equal(r.status, 200)
    const ts = Date.UTC(2026, 10, 23, 8)
    const row = await stored(`osmand-${ts}`)
    assert.deepEqual(row.values, {
      lat: 60,
      lon: 30,
      heading: 90,
      hdop: 1.2,
      driverUniqueId: '007',
      ignition: true,
      rpm: 933,
      fuel: 24.5,
      // Past what a double holds exactly: kept as the text sent.
      iccid: '89310410106543789301',
      valid: 1,
    })
  })

  test("Traccar Client's JSON body lands as a position in our units: m/s become km/h, the battery level %", async () => {
    const r = await post(JSON.stringify(LOCATION), 'application/json')
    assert.equal(r.status, 200)
    const ts = Date.parse('2021-07-21T08:06:34.444Z')
    const row = await stored(`osmand-${ts}`)
    assert.equal(row.ts, ts)
    assert.deepEqual(row.values, {
      lat: -6.1148096,
      lon: 106.6837015,
      // 18.67 m/s x 3.6 = 67.212 km/h.
      speed: 67.212,
      heading: 63,
      accuracy: 3.8,
      alt: 35.7,
      is_moving: false,
      odometer: 0,
      event: 'motionchange',
      activity: 'still',
      batt: 79,
      charge: false,
    })
  })

  test('in the JSON body, -1 (unknown) leaves speed, heading, accuracy and battery out; extras are values', async () => {
    const body = structuredClone(LOCATION) as any
    body.location.timestamp = '2021-07-21T08:07:00.000Z'
    Object.assign(body.location.coords, { speed: -1, heading: -1, accuracy: -1 })
    body.location.battery.level = -1
    body.location.mock = true
    body.location.extras = { trip: 'morning', passengers: 2 }
    assert.equal((await post(JSON.stringify(body), 'application/json; charset=utf-8')).status, 200)
    const row = await stored(`osmand-${Date.parse('2021-07-21T08:07:00.000Z')}`)
    assert.equal(row.values.speed, undefined)
    assert.equal(row.values.heading, undefined)
    assert.equal(row.values.accuracy, undefined)
    assert.equal(row.values.batt, undefined)
    assert.equal(row.values.mock, true)
    assert.equal(row.values.trip, 'morning')
    assert.equal(row.values.passengers, 2)
  })

  test('a fix the app sends again (it retries until it gets a 200) is stored once', async () => {
    const again = form({ timestamp: '1732331000' })
    const before = await p.metric('iotcore_messages_duplicate_total')
    assert.equal((await post(again)).status, 200)
    assert.equal((await post(again)).status, 200)
    await drained(p)
    await waitFor(async () => (await p.metric('iotcore_messages_duplicate_total')) === before + 1)
    assert.equal((await rows(p, dev.id)).filter((r) => r.msgId === 'osmand-1732331000000').length, 1)
  })

  test('an unknown id is 403 with a code, counted, and nothing is queued', async () => {
    const n = await refusals('unknown_device')
    const received = await p.metric('iotcore_messages_received_total', 'transport="osmand"')
    const r = await post(form({ id: '111111111111111' }))
    assert.equal(r.status, 403)
    assert.equal(r.code, 'IOT_ERR_IMEI_NOT_REGISTERED')
    assert.match(r.message!, /111111111111111/)
    const j = await post(JSON.stringify({ ...LOCATION, device_id: '111111111111111' }), 'application/json')
    assert.equal(j.status, 403)
    assert.equal(await refusals('unknown_device'), n + 2)
    assert.equal(await p.metric('iotcore_messages_received_total', 'transport="osmand"'), received)
  })

  test('a request without an id is 400 and says what is missing', async () => {
    const r = await send(port, { path: '/?lat=60&lon=30' })
    assert.equal(r.status, 400)
    assert.equal(r.code, 'IOT_ERR_BAD_REQUEST')
    assert.match(r.message!, /'id'/)
    const j = await post('{"location": {}}', 'application/json')
    assert.equal(j.status, 400)
    assert.match(j.message!, /device_id/)
  })

  for (const [name, over, reason] of [
    ['a latitude that is not a number', { lat: 'abc' }, 'invalid_value'],
    ['a latitude out of range', { lat: '123.5' }, 'invalid_value'],
    ['a speed that is not a number', { speed: 'fast' }, 'invalid_value'],
    ['charge that is not a boolean', { charge: 'maybe' }, 'invalid_value'],
    ['a timestamp in local time (no offset)', { timestamp: '2014-06-04 09:10:11' }, 'invalid_ts'],
    ['a reserved key as a parameter', { msgId: 'x' }, 'reserved_key'],
  ] as const) {
    test(`${name} is 400 with a code and quarantined as sent (${reason})`, async () => {
      const body = form({ timestamp: '1732332000', ...over })
      const r = await post(body)
      assert.equal(r.status, 400)
      assert.equal(r.code, 'IOT_ERR_INVALID_READING')
      const q = await waitFor(async () =>
        (await p.quarantine(dev.id, reason)).find((i) => i.payload === body),
      )
      assert.equal(q.acked, false)
    })
  }

  test('a bad value in a GET query is quarantined with the request target as sent', async () => {
    const path = `/?id=${IMEI}&lat=91&lon=30&timestamp=1732333000`
    const r = await send(port, { path })
    assert.equal(r.status, 400)
    assert.match(r.message!, /lat 91/)
    await waitFor(async () => (await p.quarantine(dev.id, 'invalid_value')).some((i) => i.payload === path))
  })

  test('a JSON body from a registered device with a field of the wrong type is 400 and quarantined as sent', async () => {
    const body = structuredClone(LOCATION) as any
    body.location.coords.latitude = '-6.11'
    const text = JSON.stringify(body)
    const r = await post(text, 'application/json')
    assert.equal(r.status, 400)
    assert.match(r.message!, /latitude must be a number/)
    await waitFor(async () => (await p.quarantine(dev.id, 'invalid_value')).some((i) => i.payload === text))
  })

  test('malformed JSON is 400 IOT_ERR_MALFORMED_JSON', async () => {
    const r = await post('{"device_id": "1",', 'application/json')
    assert.equal(r.status, 400)
    assert.equal(r.code, 'IOT_ERR_MALFORMED_JSON')
  })

  test('a body over the limit is 413, whether declared or sent', async () => {
    const big = form({ note: 'x'.repeat(5000) })
    const sent = await send(port, {
      method: 'POST',
      path: '/',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'transfer-encoding': 'chunked' },
      body: big,
    })
    assert.equal(sent.status, 413)
    assert.equal(sent.code, 'IOT_ERR_PAYLOAD_TOO_LARGE')
    const declared = await TcpClient.open(port)
    declared.write('POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\nid=1')
    await declared.waitClosed()
    assert.match(declared.data.toString(), /^HTTP\/1.1 413 /)
  })

  test('a method other than GET or POST is 400', async () => {
    const r = await send(port, { method: 'PUT', path: `/?${form()}` })
    assert.equal(r.status, 400)
    assert.match(r.message!, /GET or POST/)
  })

  test('bytes that are not HTTP get a 400 and the close', async () => {
    const c = await TcpClient.open(port)
    c.write('\x00\x01\x02 not http\r\n\r\n')
    await c.waitClosed()
    assert.match(c.data.toString(), /^HTTP\/1.1 400 /)
    assert.match(c.data.toString(), /IOT_ERR_BAD_REQUEST/)
  })

  test('a sender that never finishes its request gets a 408 and the close; others are answered meanwhile', async () => {
    const server = p.app.osmand!.server!
    const was = server.requestTimeout
    server.requestTimeout = 1000
    try {
      const n = await refusals('timeout')
      const slow = await TcpClient.open(port)
      slow.write(
        'POST / HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\nid=',
      )
      assert.equal((await post(form({ timestamp: '1732334000' }))).status, 200)
      await slow.waitClosed()
      assert.match(slow.data.toString(), /^HTTP\/1.1 408 /)
      assert.match(slow.data.toString(), /IOT_ERR_TIMEOUT/)
      assert.equal(await refusals('timeout'), n + 1)
    } finally {
      server.requestTimeout = was
    }
  })

  test('a flood of unknown ids from one address is answered 429 with Retry-After, and other addresses are not', async () => {
    const flood = '127.0.0.8'
    for (let i = 0; i < 20; i++)
      assert.equal((await post(form({ id: `9${i}` }), undefined, flood)).status, 403)
    const r = await post(form({ timestamp: '1732335000' }), undefined, flood)
    assert.equal(r.status, 429)
    assert.equal(r.code, 'IOT_ERR_RATE_LIMITED')
    assert.ok(Number(r.headers['retry-after']) > 0)
    assert.equal((await post(form({ timestamp: '1732335001' }))).status, 200)
    const health = (await p.req('GET', '/readyz')).body.components.osmand
    assert.equal(health.ok, true)
    assert.ok(health.limited >= 1 && health.refused >= 20, JSON.stringify(health))
  })
})

describe('OsmAnd is answered 200 only once durably queued', () => {
  let p: Platform
  after(() => p?.stop())

  test('while the append cannot land, no answer; when it lands, 200', async () => {
    p = await startPlatform({ IOTCORE_ROLES: 'api,gateway', IOTCORE_OSMAND_PORT: '0' })
    await p.createDevice('ordered-phone', { imei: IMEI })
    const held = await holdQueueWrites(p.dataDir)
    let answered = false
    let appendingAtAnswer = -1
    const answer = send(p.app.osmand!.port, { path: `/?${form()}` }).then((a) => {
      answered = true
      appendingAtAnswer = p.app.queue.appending
      return a
    })
    try {
      await waitFor(() => p.app.queue.appending === 1, 15_000, 'the fix to be appending')
      assert.equal(answered, false, 'no answer while the append cannot be durable')
    } finally {
      await held.release()
    }
    assert.equal((await answer).status, 200)
    assert.equal(appendingAtAnswer, 0, 'when the answer arrived, no append was pending')
  })
})
