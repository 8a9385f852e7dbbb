import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Device, type Platform, startPlatform, waitFor } from '../../helpers/index.js'
import { holdQueueWrites } from '../../helpers/queue-lock.js'
import { rows } from '../../helpers/stored.js'
import { TcpClient } from '../../helpers/tcp.js'

const hello = (dev: Device) => JSON.stringify({ id: dev.id, token: dev.token }) + '\n'

describe('JSON lines over TCP', () => {
  let p: Platform
  let dev: Device
  let port: number
  before(async () => {
    p = await startPlatform({ IOTCORE_JSONL_PORT: '0', IOTCORE_MAX_PAYLOAD_BYTES: '4096' })
    dev = await p.createDevice('lines')
    port = p.app.jsonl!.port
  })
  after(() => p.stop())

  /** A connection that sent its credentials and read the answer to them. */
  const authenticated = async (d = dev) => {
    const c = await TcpClient.open(port)
    c.write(hello(d))
    assert.deepEqual(await c.nextLine(), { device: d.id })
    return c
  }
  const refusals = (reason: string) => p.metric('iotcore_device_refusals_total', `reason="${reason}"`)

  test('the first line authenticates; then every line is answered by one line once queued, in order, and stored', async () => {
    const c = await TcpClient.open(port)
    c.write(
      hello(dev) +
        '{"msgId":"l1","ts":1732330000000,"speed":1}\n' +
        '[{"msgId":"l2","ts":1732330001000,"speed":2},{"msgId":"l3","ts":1732330002000,"speed":3}]\n' +
        '[{"msgId":"l4","ts":1732330003000,"speed":4},{"msgId":"l5","speed":[5]}]\n',
    )
    assert.deepEqual(await c.nextLine(), { device: dev.id })
    assert.deepEqual(await c.nextLine(), { ok: 1 })
    assert.deepEqual(await c.nextLine(), { ok: 2 })
    assert.deepEqual(await c.nextLine(), { ok: 1, quarantined: 1 })
    c.destroy()
    const stored = await waitFor(async () => {
      const r = (await rows(p, dev.id)).filter((x) => /^l\d$/.test(x.msgId))
      return r.length === 4 ? r : undefined
    })
    assert.deepEqual(
      stored.map((r) => [r.msgId, r.values.speed]),
      [
        ['l1', 1],
        ['l2', 2],
        ['l3', 3],
        ['l4', 4],
      ],
    )
  })

  test('refused lines are answered in their turn between queued ones, and quarantined as sent', async () => {
    const c = await authenticated()
    const bad = '{"msgId": "r2", "speed": 2,'
    c.write(
      `{"msgId":"r1","speed":1}\n${bad}\n{"msgId":"r3","speed":3}\n{"msgId":"r4","lat":123,"lon":1}\n{"msgId":"r5","speed":5}\n`,
    )
    const answers = [
      await c.nextLine(),
      await c.nextLine(),
      await c.nextLine(),
      await c.nextLine(),
      await c.nextLine(),
    ]
    assert.deepEqual(answers[0], { ok: 1 })
    assert.equal(answers[1].error, 'IOT_ERR_MALFORMED_JSON')
    assert.deepEqual(answers[2], { ok: 1 })
    assert.equal(answers[3].error, 'IOT_ERR_INVALID_READING')
    assert.match(answers[3].message, /lat 123/)
    assert.deepEqual(answers[4], { ok: 1 })
    c.destroy()
    const q = await waitFor(async () =>
      (await p.quarantine(dev.id, 'malformed_json')).find((i) => i.payload === bad),
    )
    assert.equal(q.acked, false)
  })

  test('thousands of lines pipelined without waiting are each answered, in order, and all stored', async () => {
    const c = await authenticated()
    const n = 5000
    let lines = ''
    for (let i = 0; i < n; i++) lines += `{"msgId":"p${i}","ts":${1732340000000 + i},"i":${i}}\n`
    c.write(lines)
    await c.until(() => c.lines().length === n + 1, 60_000)
    const answers = c.lines().slice(1)
    assert.equal(answers.length, n)
    assert.ok(answers.every((a) => a === '{"ok":1}'))
    c.destroy()
    await waitFor(
      async () => (await rows(p, dev.id)).filter((r) => r.msgId.startsWith('p')).length === n,
      60_000,
      'the pipelined readings stored',
    )
  })

  test("blank lines are skipped, CRLF ends are taken, and an unended last line is answered when the sender ends its side (nc -N's way)", async () => {
    const c = await TcpClient.open(port)
    c.write(`${hello(dev)}\n   \r\n{"msgId":"e1","speed":1}\r\n{"msgId":"e2","speed":2}`)
    c.end()
    await c.waitClosed()
    assert.deepEqual(c.lines(), [JSON.stringify({ device: dev.id }), '{"ok":1}', '{"ok":1}'])
  })

  test('a wrong token gets an error line and the close, and is counted', async () => {
    const n = await refusals('bad_token')
    const c = await TcpClient.open(port)
    c.write(hello({ id: dev.id, token: 'iot_wrong' }) + '{"speed":1}\n')
    const answer = await c.nextLine()
    assert.equal(answer.error, 'IOT_ERR_UNAUTHORIZED')
    await c.waitClosed()
    assert.equal(c.lines().length, 1, 'the line after it is not taken')
    assert.equal(await refusals('bad_token'), n + 1)
  })

  for (const [name, first] of [
    ['not JSON', 'hello'],
    ['a reading instead of the credentials', '{"speed": 1}'],
    ['an id without a token', '{"id": "d123"}'],
  ] as const) {
    test(`a first line that is ${name} gets an error line and the close`, async () => {
      const c = await TcpClient.open(port)
      c.write(first + '\n')
      const answer = await c.nextLine()
      assert.equal(answer.error, 'IOT_ERR_UNAUTHORIZED')
      assert.match(answer.message, /"id"/)
      await c.waitClosed()
    })
  }

  test('a line over the size limit: the lines before it are answered, then an error line and the close', async () => {
    const c = await authenticated()
    const n = await refusals('too_large')
    c.write(`{"msgId":"big0","speed":1}\n{"note":"${'x'.repeat(5000)}"}\n{"msgId":"big2","speed":2}\n`)
    assert.deepEqual(await c.nextLine(), { ok: 1 })
    assert.equal((await c.nextLine()).error, 'IOT_ERR_PAYLOAD_TOO_LARGE')
    await c.waitClosed()
    assert.equal(c.lines().length, 3, 'nothing after it is taken')
    assert.equal(await refusals('too_large'), n + 1)
    await waitFor(async () => (await p.quarantine(dev.id, 'payload_too_large')).length > 0)
  })

  test('a sender that does not authenticate in time, or leaves a line unfinished, is closed; others are served meanwhile', async () => {
    const gw = p.app.jsonl!
    const was = { ...gw.limits }
    gw.limits.authMs = 500
    gw.limits.lineMs = 500
    try {
      const n = await refusals('timeout')
      const silent = await TcpClient.open(port)
      const trickle = await authenticated()
      trickle.write('{"msgId":"t1","spe')
      const other = await authenticated()
      other.write('{"msgId":"t2","speed":2}\n')
      assert.deepEqual(await other.nextLine(), { ok: 1 })
      const s = await silent.nextLine()
      assert.equal(s.error, 'IOT_ERR_TIMEOUT')
      assert.match(s.message, /authentication/)
      await silent.waitClosed()
      const t = await trickle.nextLine()
      assert.equal(t.error, 'IOT_ERR_TIMEOUT')
      assert.match(t.message, /line/)
      await trickle.waitClosed()
      assert.equal(await refusals('timeout'), n + 2)
      other.write('{"msgId":"t3","speed":3}\n')
      assert.deepEqual(await other.nextLine(), { ok: 1 })
      other.destroy()
    } finally {
      Object.assign(gw.limits, was)
    }
  })

  test("a device's connection is cut when its token is rotated", async () => {
    const d = await p.createDevice('rotated')
    const c = await authenticated(d)
    const r = await p.req('POST', `/api/v1/devices/${d.id}/token`)
    assert.equal(r.status, 200)
    const answer = await c.nextLine()
    assert.equal(answer.error, 'IOT_ERR_UNAUTHORIZED')
    assert.match(answer.message, /rotated/)
    await c.waitClosed()
  })

  test('a flood of bad tokens from one address is turned away with an error line, and other addresses are not', async () => {
    const flood = '127.0.0.6'
    for (let i = 0; i < 20; i++) {
      const c = await TcpClient.open(port, flood)
      c.write(hello({ id: dev.id, token: `iot_guess${i}` }))
      assert.equal((await c.nextLine()).error, 'IOT_ERR_UNAUTHORIZED')
      await c.waitClosed()
    }
    const turned = await TcpClient.open(port, flood)
    turned.write(hello(dev))
    const answer = await turned.nextLine()
    assert.equal(answer.error, 'IOT_ERR_RATE_LIMITED')
    assert.match(answer.message, /127\.0\.0\.6/)
    await turned.waitClosed()
    const ok = await authenticated()
    ok.destroy()
    const health = (await p.req('GET', '/readyz')).body.components.jsonl
    assert.ok(health.limited >= 1 && health.refused >= 20, JSON.stringify(health))
  })
})

describe('JSON lines are answered ok only once durably queued', () => {
  let p: Platform
  after(() => p?.stop())

  test('while the append cannot land, no answer; when it lands, {"ok": 1}', async () => {
    p = await startPlatform({ IOTCORE_ROLES: 'api,gateway', IOTCORE_JSONL_PORT: '0' })
    const dev = await p.createDevice('ordered-lines')
    const c = await TcpClient.open(p.app.jsonl!.port)
    c.write(hello(dev))
    assert.deepEqual(await c.nextLine(), { device: dev.id })
    const held = await holdQueueWrites(p.dataDir)
    let appendingAtAnswer = -1
    c.onData = () => {
      if (appendingAtAnswer < 0) appendingAtAnswer = p.app.queue.appending
    }
    try {
      c.write('{"msgId":"o1","speed":1}\n')
      await waitFor(() => p.app.queue.appending === 1, 15_000, 'the line to be appending')
      assert.equal(c.lines().length, 1, 'no answer while the append cannot be durable')
    } finally {
      await held.release()
    }
    assert.deepEqual(await c.nextLine(), { ok: 1 })
    assert.equal(appendingAtAnswer, 0, 'when the answer arrived, no append was pending')
    c.destroy()
  })
})
