import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Device, type Platform, startPlatform, waitFor } from '../../helpers/index.js'
import { holdQueueWrites } from '../../helpers/queue-lock.js'
import { drained, rows } from '../../helpers/stored.js'
import { TcpClient } from '../../helpers/tcp.js'

const IMEI = '356307042441013'

/** A signal as the founders' gateway writes it: strings for every field, their date form, an extra key. */
const founders = (over: Record<string, unknown> = {}) =>
  JSON.stringify({
    device_number: IMEI,
    event_code: '7000',
    message_date: '2026/11/23 08:00:00',
    latitude: '37.9838',
    longitude: '23.7275',
    driver: 'nikos',
    ...over,
  })

describe("the founders' signal protocol", () => {
  let p: Platform
  let dev: Device
  let port: number
  before(async () => {
    p = await startPlatform({ IOTCORE_SIGNAL_PORT: '0', IOTCORE_MAX_PAYLOAD_BYTES: '4096' })
    dev = await p.createDevice('founders-car', { imei: IMEI })
    port = p.app.signal!.port
  })
  after(() => p.stop())

  /** Sends `bytes` on a new connection and returns all the server sent once it closed. */
  const send = async (bytes: string | Buffer, localAddress?: string) => {
    const c = await TcpClient.open(port, localAddress)
    c.write(bytes)
    await c.waitClosed()
    return c.data.toString('latin1')
  }
  const refusals = (reason: string) => p.metric('iotcore_device_refusals_total', `reason="${reason}"`)

  test("a signal in the founders' format is answered 1, closed, and stored with its event code, named", async () => {
    assert.equal(await send(founders()), '1')
    const row = await waitFor(async () => (await rows(p, dev.id)).find((r) => r.values.event === 7000))
    assert.equal(row.ts, Date.UTC(2026, 10, 23, 8, 0, 0))
    assert.deepEqual(row.values, {
      lat: 37.9838,
      lon: 23.7275,
      event: 7000,
      eventName: 'ignition_on',
      driver: 'nikos',
    })
  })

  test('numbers where the founders send strings, an ISO 8601 date with its offset, and the other named codes', async () => {
    const codes = [
      [7001, 'acceleration'],
      [7002, 'deceleration'],
      [7003, 'ignition_off'],
      [7100, undefined],
    ] as const
    for (const [code, name] of codes) {
      const signal = founders({
        event_code: code,
        message_date: '2026-11-23T10:00:01+02:00',
        latitude: 37.5,
        longitude: -122.25,
      })
      assert.equal(await send(signal), '1')
      const row = await waitFor(async () => (await rows(p, dev.id)).find((r) => r.values.event === code))
      assert.equal(row.ts, Date.UTC(2026, 10, 23, 8, 0, 1))
      assert.equal(row.values.eventName, name)
      assert.equal(row.values.lat, 37.5)
      assert.equal(row.values.lon, -122.25)
    }
  })

  test("the signal's end is its closing brace: found across a byte-at-a-time stream, past braces inside strings, with the sender's side still open", async () => {
    const signal = founders({
      event_code: 7002,
      note: 'a } and a " and a \\ and a {',
      message_date: '2026/11/23 08:00:02',
    })
    const c = await TcpClient.open(port)
    for (const b of Buffer.from(signal)) {
      c.write(Buffer.from([b]))
      await new Promise((r) => setImmediate(r))
    }
    // Nothing ended our side: the `1` comes because the object is complete.
    await c.waitClosed()
    assert.equal(c.data.toString(), '1')
    const row = await waitFor(async () =>
      (await rows(p, dev.id)).find((r) => r.ts === Date.UTC(2026, 10, 23, 8, 0, 2)),
    )
    assert.equal(row.values.note, 'a } and a " and a \\ and a {')
  })

  test('a signal sent again after its 1 was lost is stored once', async () => {
    const signal = founders({ event_code: 7001, message_date: '2026/11/23 09:00:00' })
    const before = await p.metric('iotcore_messages_duplicate_total')
    assert.equal(await send(signal), '1')
    assert.equal(await send(signal), '1')
    await drained(p)
    await waitFor(async () => (await p.metric('iotcore_messages_duplicate_total')) === before + 1)
    const same = (await rows(p, dev.id)).filter((r) => r.ts === Date.UTC(2026, 10, 23, 9))
    assert.equal(same.length, 1)
  })

  test('an unknown device_number is closed without a 1, counted, and nothing is queued', async () => {
    const unknown = await refusals('unknown_device')
    const received = await p.metric('iotcore_messages_received_total', 'transport="signal"')
    assert.equal(await send(founders({ device_number: '999999999999999' })), '')
    assert.equal(await refusals('unknown_device'), unknown + 1)
    assert.equal(await p.metric('iotcore_messages_received_total', 'transport="signal"'), received)
  })

  for (const [name, bytes, reason] of [
    ['malformed JSON', '{"device_number": "1", }', 'malformed'],
    ['a stream that is not a JSON object', 'hello\r\n', 'malformed'],
    ['an object with no device_number', '{"event_code": 7000}', 'malformed'],
    ['a signal over the size limit', `{"device_number":"${IMEI}","note":"${'x'.repeat(5000)}"}`, 'too_large'],
  ] as const) {
    test(`${name} is closed without a 1, counted as ${reason}`, async () => {
      const n = await refusals(reason)
      assert.equal(await send(bytes), '')
      assert.equal(await refusals(reason), n + 1)
    })
  }

  for (const [name, over, reason] of [
    ['a message_date in another form', { message_date: '23/11/2026 08:00:00' }, 'invalid_ts'],
    ['a message_date without an offset', { message_date: '2026-11-23T08:00:00' }, 'invalid_ts'],
    ['a latitude out of range', { latitude: '123.5' }, 'invalid_value'],
    ['a longitude that is not a number', { longitude: 'east' }, 'invalid_value'],
    ['an event_code that is not an integer', { event_code: '70a0' }, 'invalid_value'],
    ['an extra key that is an object', { extra: { a: 1 } }, 'invalid_value'],
    ['an extra key that names a decoded value', { lat: 1 }, 'duplicate_key'],
  ] as const) {
    test(`${name} from a registered device is closed without a 1 and quarantined as sent (${reason})`, async () => {
      const signal = founders(over)
      assert.equal(await send(signal), '')
      const q = await waitFor(async () =>
        (await p.quarantine(dev.id, reason)).find((i) => i.payload === signal),
      )
      assert.equal(q.acked, false)
      assert.ok(q.detail.length > 10)
    })
  }

  test('a sender that never finishes its signal is closed after the timeout, and others are answered meanwhile', async () => {
    const gw = p.app.signal!
    const was = gw.limits.signalMs
    gw.limits.signalMs = 500
    try {
      const n = await refusals('timeout')
      const slow = await TcpClient.open(port)
      slow.write(founders().slice(0, 30))
      assert.equal(await send(founders({ event_code: 7003, message_date: '2026/11/23 10:00:00' })), '1')
      await slow.waitClosed()
      assert.equal(slow.data.length, 0)
      assert.equal(await refusals('timeout'), n + 1)
    } finally {
      gw.limits.signalMs = was
    }
  })

  test('a flood of unknown devices from one address is turned away, and other addresses are not', async () => {
    // Any 127.0.0.0/8 address reaches the listener on Linux: this one is the flood's alone.
    const flood = '127.0.0.5'
    for (let i = 0; i < 20; i++) assert.equal(await send(founders({ device_number: `9${i}` }), flood), '')
    const limited = await refusals('rate_limited')
    assert.equal(await send(founders({ message_date: '2026/11/23 11:00:00' }), flood), '', 'turned away')
    assert.equal(await refusals('rate_limited'), limited + 1)
    assert.equal(
      await send(founders({ message_date: '2026/11/23 11:00:01' })),
      '1',
      'another address is served',
    )
    const health = (await p.req('GET', '/readyz')).body.components.signal
    assert.equal(health.ok, true)
    assert.ok(health.limited >= 1 && health.refused >= 20, JSON.stringify(health))
  })
})

describe("the founders' signal is answered 1 only once durably queued", () => {
  let p: Platform
  after(() => p?.stop())

  test('while the append cannot land, no 1; when it lands the 1 comes, and the signal is in the queue', async () => {
    // No ingest: what the gateway appends stays in the queue, where it can be read back.
    p = await startPlatform({ IOTCORE_ROLES: 'api,gateway', IOTCORE_SIGNAL_PORT: '0' })
    const dev = await p.createDevice('ordered', { imei: IMEI })
    const held = await holdQueueWrites(p.dataDir)
    const c = await TcpClient.open(p.app.signal!.port)
    let appendingAtOne = -1
    c.onData = () => {
      if (appendingAtOne < 0) appendingAtOne = p.app.queue.appending
    }
    try {
      c.write(founders({ event_code: 7003 }))
      // Admitted, its commit waiting behind the held lock: the gateway has it and cannot have it durable.
      await waitFor(() => p.app.queue.appending === 1, 15_000, 'the signal to be appending')
      assert.equal(c.data.length, 0, 'no 1 while the append cannot be durable')
    } finally {
      await held.release()
    }
    await c.waitClosed()
    assert.equal(c.data.toString(), '1')
    assert.equal(appendingAtOne, 0, 'when the 1 arrived, no append was pending')
    const consumer = p.app.queue.consumer()
    const batch = await consumer.next(10, 5_000)
    assert.ok(batch)
    const env = batch.items.find((e) => e.deviceId === dev.id && e.transport === 'signal')
    assert.ok(env, 'the signal is in the durable queue')
    assert.equal(JSON.parse(env.payload.toString()).values.event, 7003)
    batch.nack()
    await consumer.close()
  })
})
