/**
 * The Teltonika gateway as a CommandChannel, driven directly (the dispatcher and the API are another part): a
 * real socket acting as the device gets the Codec 12 bytes of the documentation, answers with the documented
 * response, and the channel reports delivered and replied; commands wait their turn, one outstanding per
 * connection; those unanswered when the connection closes are reported failed.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { CommandEvents } from '../../../src/gateway/commands.js'
import { encodeCommand } from '../../../src/gateway/teltonika/codec.js'
import { type Platform, startPlatform, waitFor } from '../../helpers/index.js'
import { rows } from '../../helpers/stored.js'
import { DOCS, RawTeltonika, ackHex, hex, messagePacket, tracker } from '../../helpers/teltonika.js'

let p: Platform
let port: number

/** CommandEvents that keep every call, in order. */
function recorder(): CommandEvents & { calls: unknown[][] } {
  const calls: unknown[][] = []
  return {
    calls,
    delivered: (id) => calls.push(['delivered', id]),
    replied: (id, status, result) => calls.push(['replied', id, status, result]),
    failed: (id, reason) => calls.push(['failed', id, reason]),
  }
}

before(async () => {
  p = await startPlatform({ IOTCORE_TELTONIKA_PORT: '0' })
  port = p.app.teltonika!.port
})
after(() => p.stop())

test('onConnect tells the device id once its handshake succeeded, and not for a refused IMEI', async () => {
  const gw = p.app.teltonika!
  const seen: string[] = []
  const stop = gw.onConnect((id) => seen.push(id))
  const refused = await RawTeltonika.handshake(port, '000000000000001')
  assert.equal(refused.answer, 0)
  const { id, imei } = await tracker(p)
  const dev = await RawTeltonika.connected(port, imei)
  await waitFor(() => seen.length > 0)
  assert.deepEqual(seen, [id])
  stop()
  dev.destroy()
  refused.dev.destroy()
})

test('send is false for a device not connected here', () => {
  assert.equal(
    p.app.teltonika!.send({ id: 'c0', deviceId: 'dnotconnected', name: 'getinfo' }, recorder()),
    false,
  )
})

test("getinfo reaches the device as the documentation's Codec 12 bytes; its response is the reply", async () => {
  const { id, imei } = await tracker(p)
  const dev = await RawTeltonika.connected(port, imei)
  const events = recorder()
  assert.equal(p.app.teltonika!.send({ id: 'c1', deviceId: id, name: 'getinfo' }, events), true)
  const command = await dev.read(DOCS.codec12Getinfo.length / 2)
  assert.equal(command.toString('hex').toUpperCase(), DOCS.codec12Getinfo)
  await waitFor(() => events.calls.length === 1)
  assert.deepEqual(events.calls, [['delivered', 'c1']])
  dev.write(hex(DOCS.codec12Response))
  await waitFor(() => events.calls.length === 2)
  assert.deepEqual(events.calls[1], ['replied', 'c1', 'ok', DOCS.codec12ResponseText])
  dev.destroy()
})

test('one command is outstanding per connection; the next goes when it is answered', async () => {
  const { id, imei } = await tracker(p)
  const dev = await RawTeltonika.connected(port, imei)
  const gw = p.app.teltonika!
  const first = recorder()
  const second = recorder()
  gw.send({ id: 'a', deviceId: id, name: 'setdigout 1' }, first)
  gw.send({ id: 'b', deviceId: id, name: 'setdigout 0' }, second)
  const one = encodeCommand('setdigout 1')
  assert.deepEqual(await dev.read(one.length), one)
  // A packet's round trip: had the second command gone too, its bytes would come before this ack.
  dev.write(hex(DOCS.codec8b))
  assert.equal((await dev.read(4)).toString('hex'), ackHex(1))
  assert.deepEqual(second.calls, [])
  dev.write(messagePacket(12, 'DOUT1:1'))
  const two = encodeCommand('setdigout 0')
  assert.deepEqual(await dev.read(two.length), two)
  dev.write(messagePacket(12, 'DOUT1:0'))
  await waitFor(() => second.calls.length === 2)
  assert.deepEqual(first.calls, [
    ['delivered', 'a'],
    ['replied', 'a', 'ok', 'DOUT1:1'],
  ])
  assert.deepEqual(second.calls, [
    ['delivered', 'b'],
    ['replied', 'b', 'ok', 'DOUT1:0'],
  ])
  dev.destroy()
})

test('when the connection closes, commands not yet sent are reported failed; the one sent stays delivered', async () => {
  const { id, imei } = await tracker(p)
  const dev = await RawTeltonika.connected(port, imei)
  const gw = p.app.teltonika!
  const sent = recorder()
  const waiting = recorder()
  gw.send({ id: 'x', deviceId: id, name: 'getver' }, sent)
  gw.send({ id: 'y', deviceId: id, name: 'getgps' }, waiting)
  await dev.read(encodeCommand('getver').length)
  await waitFor(() => sent.calls.length === 1)
  dev.destroy()
  await waitFor(() => waiting.calls.length === 1)
  assert.equal(waiting.calls[0][0], 'failed')
  // Sent again, a command the device may have run would run twice: it is not reported failed.
  assert.deepEqual(sent.calls, [['delivered', 'x']])
  assert.equal(gw.send({ id: 'z', deviceId: id, name: 'getver' }, recorder()), false)
})

test('a Codec 12 response with no command outstanding is stored as a reading', async () => {
  const { id, imei } = await tracker(p)
  const dev = await RawTeltonika.connected(port, imei)
  dev.write(messagePacket(12, 'unasked'))
  dev.write(hex(DOCS.codec8b))
  await dev.read(4)
  dev.destroy()
  const stored = await waitFor(async () => {
    const r = await rows(p, id)
    return r.length === 2 && r
  })
  assert.deepEqual(
    stored.filter((r) => 'response' in r.values).map((r) => r.values),
    [{ response: 'unasked' }],
  )
})

test('a newer connection of the same device takes its commands over; the older one is closed', async () => {
  const { id, imei } = await tracker(p)
  const old = await RawTeltonika.connected(port, imei)
  const fresh = await RawTeltonika.connected(port, imei)
  await old.waitClosed()
  const events = recorder()
  assert.equal(p.app.teltonika!.send({ id: 'n', deviceId: id, name: 'getinfo' }, events), true)
  assert.equal(
    (await fresh.read(DOCS.codec12Getinfo.length / 2)).toString('hex').toUpperCase(),
    DOCS.codec12Getinfo,
  )
  fresh.destroy()
})

describe('through the API and the dispatcher', () => {
  /** GET the command until `pred` holds; returns it. */
  function command(deviceId: string, cid: string, pred: (c: any) => boolean) {
    return waitFor(async () => {
      const r = await p.req('GET', `/api/v1/devices/${deviceId}/commands/${cid}`)
      return pred(r.body) && r.body
    })
  }

  test('a command queued while the tracker is offline goes out as Codec 12 when it connects; its response is the result', async () => {
    const { id, imei } = await tracker(p)
    const queued = await p.req('POST', `/api/v1/devices/${id}/commands`, { name: 'getinfo' })
    assert.equal(queued.status, 201)
    const dev = await RawTeltonika.connected(port, imei)
    const bytes = await dev.read(DOCS.codec12Getinfo.length / 2)
    assert.equal(bytes.toString('hex').toUpperCase(), DOCS.codec12Getinfo)
    await command(id, queued.body.id, (c) => c.status === 'delivered')
    dev.write(hex(DOCS.codec12Response))
    const done = await command(id, queued.body.id, (c) => c.status === 'replied')
    assert.equal(done.result, DOCS.codec12ResponseText)
    dev.destroy()
  })

  test('a command queued while the tracker is connected goes out at once', async () => {
    const { id, imei } = await tracker(p)
    const dev = await RawTeltonika.connected(port, imei)
    const queued = await p.req('POST', `/api/v1/devices/${id}/commands`, { name: 'setdigout 1' })
    const out = encodeCommand('setdigout 1')
    assert.deepEqual(await dev.read(out.length), out)
    dev.write(messagePacket(12, 'DOUT1:1 DOUT2:0'))
    const done = await command(id, queued.body.id, (c) => c.status === 'replied')
    assert.equal(done.result, 'DOUT1:1 DOUT2:0')
    dev.destroy()
  })
})

test('a command queued for an offline tracker survives a restart of the platform and reaches it after', async () => {
  const dataDir = mkdtempSync(join(tmpdir(), 'iotcore-test-'))
  const first = await startPlatform({ IOTCORE_TELTONIKA_PORT: '0' }, { dataDir })
  const imei = '354160000000999'
  const { id } = await first.createDevice('restarted tracker', { imei })
  const queued = await first.req('POST', `/api/v1/devices/${id}/commands`, { name: 'getver' })
  assert.equal(queued.status, 201)
  await first.stop()
  const second = await startPlatform(
    { IOTCORE_TELTONIKA_PORT: '0' },
    { dataDir, databaseUrl: first.databaseUrl },
  )
  try {
    const dev = await RawTeltonika.connected(second.app.teltonika!.port, imei)
    const out = encodeCommand('getver')
    assert.deepEqual(await dev.read(out.length), out)
    dev.write(messagePacket(12, 'Ver:03.29.00_04 GPS:AXN_5.10'))
    await waitFor(async () => {
      const r = await second.req('GET', `/api/v1/devices/${id}/commands/${queued.body.id}`)
      return r.body.status === 'replied'
    })
    dev.destroy()
  } finally {
    await second.stop()
    rmSync(dataDir, { recursive: true, force: true })
  }
})
