import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { waitFor } from '../../helpers/index.js'
import { type AnyPacket, type Device, LIVENESS_MS } from '../../helpers/mqtt-raw.js'
import { MqttSuite, closed, mosquittoPub, openClient, publish, series } from './helpers.js'

const T0 = Date.parse('2026-11-23T08:00:00Z')
const telemetry = (d: Device) => `devices/${d.id}/telemetry`

describe('MQTT PUBLISH: telemetry into the durable queue, acked once durable', () => {
  const mq = new MqttSuite()

  for (const version of [4, 5] as const) {
    test(`MQTT ${version === 4 ? '3.1.1' : '5'}: QoS 0, 1 and 2 telemetry is stored with its values and timestamps`, async () => {
      const dev = await mq.p.createDevice(`qos-v${version}`)
      const c = await mq.client(version, dev)
      for (const qos of [0, 1, 2] as const) {
        const err = await publish(
          c,
          telemetry(dev),
          JSON.stringify({ ts: T0 + qos * 1000, msgId: `q${qos}`, temp: 20.5 + qos, door: qos === 1 }),
          qos,
        )
        assert.equal(err, undefined)
      }
      const temp = await waitFor(async () => {
        const s = await series(mq.p, dev.id, 'temp')
        return s.length === 3 ? s : undefined
      })
      assert.deepEqual(temp, [
        { ts: T0, value: 20.5 },
        { ts: T0 + 1000, value: 21.5 },
        { ts: T0 + 2000, value: 22.5 },
      ])
      assert.deepEqual(await series(mq.p, dev.id, 'door'), [
        { ts: T0, value: false },
        { ts: T0 + 1000, value: true },
        { ts: T0 + 2000, value: false },
      ])
    })
  }

  test('an array with nested values and ISO timestamps stores every reading; no ts means the receive time', async () => {
    const dev = await mq.p.createDevice('shapes')
    const c = await mq.client(5, dev)
    const body = [
      { ts: '2026-11-23T08:00:00Z', msgId: 'a1', values: { lat: 37.98, lon: 23.72, speed: 52.3 } },
      { ts: '2026-11-23T08:00:01.500Z', msgId: 'a2', values: { lat: 37.9801, lon: 23.7201, speed: 53 } },
    ]
    assert.equal(await publish(c, telemetry(dev), JSON.stringify(body), 1), undefined)
    const before = Date.now()
    assert.equal(await publish(c, telemetry(dev), '{"rpm": 2100}', 1), undefined)
    const after = Date.now()
    const speed = await waitFor(async () => {
      const s = await series(mq.p, dev.id, 'speed')
      return s.length === 2 ? s : undefined
    })
    assert.deepEqual(speed, [
      { ts: T0, value: 52.3 },
      { ts: T0 + 1500, value: 53 },
    ])
    assert.deepEqual(
      (await series(mq.p, dev.id, 'lat')).map((x) => x.value),
      [37.98, 37.9801],
    )
    const rpm = await waitFor(async () => (await series(mq.p, dev.id, 'rpm'))[0])
    assert.equal(rpm.value, 2100)
    assert.ok(rpm.ts >= before && rpm.ts <= after, `ts ${rpm.ts} is the gateway's receive time`)
  })

  test('PUBACK and PUBREC are sent only after the message is in the durable queue', async () => {
    const dev = await mq.p.createDevice('durable')
    // With the ingest stopped the queue only grows, so its depth at each ack says whether the message was in.
    await mq.p.app.ingest!.stop()
    try {
      // The depth is refreshed from LMDB every 250 ms: removals the ingest thread made just before it stopped
      // show only then, so the base is read after a refresh has certainly run.
      await new Promise((r) => setTimeout(r, 600))
      const base = mq.p.app.queue.stats().depth
      let n = 0
      for (const version of [4, 5] as const) {
        const c = await mq.client(version, dev, { clientId: `durable-${version}` })
        const depthAtAck: number[] = []
        c.on('packetreceive', (pk) => {
          if (pk.cmd === 'puback' || pk.cmd === 'pubrec') depthAtAck.push(mq.p.app.queue.stats().depth)
        })
        for (const qos of [1, 2] as const) {
          n++
          assert.equal(
            await publish(c, telemetry(dev), `{"msgId":"d${n}","ts":${T0 + n},"x":${n}}`, qos),
            undefined,
          )
          assert.equal(depthAtAck.length, 1)
          assert.ok(
            depthAtAck[0] >= base + n,
            `at the ack the queue holds ${depthAtAck[0] - base} of the ${n} messages sent`,
          )
          depthAtAck.length = 0
        }
      }
      const { rows } = await mq.p.app.store.pool.query(
        'SELECT count(*)::int AS n FROM telemetry WHERE device_pk = (SELECT pk FROM devices WHERE id = $1)',
        [dev.id],
      )
      assert.equal(rows[0].n, 0, 'nothing reached the store while the ingest was stopped')
    } finally {
      mq.p.app.ingest!.start()
    }
    await waitFor(
      async () => (await series(mq.p, dev.id, 'x')).length === 4,
      LIVENESS_MS,
      'the acked messages stored',
    )
  })

  test('a reading sent twice with the same msgId is stored once and counted as a duplicate', async () => {
    const dev = await mq.p.createDevice('dups')
    const dup0 = await mq.p.metric('iotcore_messages_duplicate_total')
    const reading = JSON.stringify({ msgId: 'same-1', ts: T0, level: 7 })
    const v3 = await mq.client(4, dev, { clientId: 'dups-3' })
    const v5 = await mq.client(5, dev, { clientId: 'dups-5' })
    assert.equal(await publish(v3, telemetry(dev), reading, 1), undefined)
    await waitFor(async () => (await series(mq.p, dev.id, 'level')).length === 1)
    assert.equal(await publish(v5, telemetry(dev), reading, 2), undefined)
    assert.equal(await publish(v3, telemetry(dev), reading, 0), undefined)
    await waitFor(
      async () => (await mq.p.metric('iotcore_messages_duplicate_total')) - dup0 === 2,
      LIVENESS_MS,
      'two duplicates counted',
    )
    assert.deepEqual(await series(mq.p, dev.id, 'level'), [{ ts: T0, value: 7 }])
  })

  test('a QoS 2 PUBLISH resent before PUBREL gets PUBREC again and is taken once', async () => {
    const dev = await mq.p.createDevice('qos2-resend')
    const c = await mq.raw(5, dev)
    const received0 = await mq.p.metric('iotcore_messages_received_total')
    const pub = {
      cmd: 'publish',
      topic: telemetry(dev),
      qos: 2,
      messageId: 7,
      payload: '{"msgId":"r1","v":1}',
    }
    c.send({ ...pub, dup: false } as AnyPacket)
    const rec1 = await c.next()
    assert.equal(rec1.cmd, 'pubrec')
    assert.equal(rec1.messageId, 7)
    c.send({ ...pub, dup: true } as AnyPacket)
    const rec2 = await c.next()
    assert.equal(rec2.cmd, 'pubrec')
    assert.equal(rec2.messageId, 7)
    c.send({ cmd: 'pubrel', messageId: 7 } as AnyPacket)
    const comp = await c.next()
    assert.equal(comp.cmd, 'pubcomp')
    assert.equal(comp.messageId, 7)
    assert.equal(comp.reasonCode ?? 0, 0)
    // A PUBREL for an id that is not in flight: MQTT 5 says 0x92 Packet Identifier not found.
    c.send({ cmd: 'pubrel', messageId: 8 } as AnyPacket)
    const unknown = await c.next()
    assert.equal(unknown.cmd, 'pubcomp')
    assert.equal(unknown.reasonCode, 0x92)
    await waitFor(async () => (await series(mq.p, dev.id, 'v')).length === 1)
    assert.equal(
      await mq.p.metric('iotcore_messages_received_total'),
      received0 + 1,
      'the resend was not queued',
    )
  })

  test('publishing to another device topic: MQTT 5 gets PUBACK 0x87 and stays, 3.1.1 is disconnected; both quarantined', async () => {
    const me = await mq.p.createDevice('intruder')
    const other = await mq.p.createDevice('victim')
    const v5 = await mq.client(5, me, { clientId: 'intruder-5' })
    const err = await publish(v5, telemetry(other), '{"msgId":"f5","x":5}', 1)
    assert.equal(err?.code, 0x87)
    // The connection is still usable.
    assert.equal(await publish(v5, telemetry(me), '{"msgId":"ok5","x":55}', 1), undefined)
    assert.equal(v5.connected, true)

    const v3 = await mq.client(4, me, { clientId: 'intruder-3' })
    let acked = false
    v3.publish(telemetry(other), '{"msgId":"f3","x":3}', { qos: 1 }, (e) => {
      if (!e) acked = true
    })
    await closed(v3)
    assert.equal(acked, false, 'a 3.1.1 forbidden publish is never acked')

    const items = await waitFor(async () => {
      const q = await mq.p.quarantine(me.id, 'forbidden_topic')
      return q.length === 2 ? q : undefined
    })
    assert.deepEqual(items.map((i) => JSON.parse(i.payload).msgId).sort(), ['f3', 'f5'])
    for (const i of items) {
      assert.equal(i.topic, telemetry(other))
      assert.equal(i.acked, false)
    }
    await waitFor(async () => (await series(mq.p, me.id, 'x')).length === 1)
    assert.deepEqual(await series(mq.p, other.id, 'x'), [], "nothing reached the other device's data")
  })

  test('malformed JSON: MQTT 5 gets PUBACK 0x99 and is quarantined as refused; 3.1.1 is acked and quarantined', async () => {
    const dev = await mq.p.createDevice('badjson')
    const v5 = await mq.client(5, dev, { clientId: 'badjson-5' })
    const err = await publish(v5, telemetry(dev), '{"temp": 21,', 1)
    assert.equal(err?.code, 0x99)
    assert.equal(v5.connected, true)
    const v3 = await mq.client(4, dev, { clientId: 'badjson-3' })
    assert.equal(await publish(v3, telemetry(dev), '{"temp": 22,', 1), undefined)
    assert.equal(v3.connected, true)
    const items = await waitFor(async () => {
      const q = await mq.p.quarantine(dev.id, 'malformed_json')
      return q.length === 2 ? q : undefined
    })
    const byPayload = Object.fromEntries(items.map((i) => [i.payload, i]))
    assert.equal(byPayload['{"temp": 21,'].acked, false, 'the MQTT 5 device was told it was refused')
    assert.equal(byPayload['{"temp": 22,'].acked, true, 'the 3.1.1 device got a plain PUBACK')
    assert.equal(byPayload['{"temp": 22,'].topic, telemetry(dev))
  })

  test('MQTT 5: an array with one bad reading is acked with success; the good ones are stored, the bad one quarantined', async () => {
    const dev = await mq.p.createDevice('mixed')
    const c = await mq.client(5, dev)
    const body =
      '[{"msgId":"m1","ts":1732340000000,"rpm":1},{"msgId":"m2","rpm":[2]},{"msgId":"m3","ts":1732340002000,"rpm":3}]'
    assert.equal(await publish(c, telemetry(dev), body, 1), undefined)
    await waitFor(async () => (await series(mq.p, dev.id, 'rpm')).length === 2)
    const bad = await waitFor(async () => (await mq.p.quarantine(dev.id, 'invalid_value'))[0])
    assert.deepEqual(JSON.parse(bad.payload), { msgId: 'm2', rpm: [2] })
    assert.equal(bad.acked, true)
  })

  test('MQTT 5: a retained publish is refused with DISCONNECT 0x9A (Retain Available is 0)', async () => {
    const dev = await mq.p.createDevice('retain')
    const c = await mq.client(5, dev)
    const disconnect = new Promise<AnyPacket>((resolve) =>
      c.once('disconnect', (pk) => resolve(pk as AnyPacket)),
    )
    c.publish(telemetry(dev), '{"x":1}', { qos: 1, retain: true }, () => {})
    assert.equal((await disconnect).reasonCode, 0x9a)
    await closed(c)
  })

  for (const version of [4, 5] as const) {
    test(`MQTT ${version === 4 ? '3.1.1' : '5'} over WebSocket at /mqtt works end to end`, async () => {
      const dev = await mq.p.createDevice(`ws-${version}`)
      const { client: c } = await openClient(`ws://127.0.0.1:${mq.p.httpPort}/mqtt`, version, dev)
      mq.track(c)
      for (const qos of [0, 1, 2] as const) {
        assert.equal(
          await publish(c, telemetry(dev), `{"msgId":"w${qos}","ts":${T0 + qos},"hum":${qos}}`, qos),
          undefined,
        )
      }
      const elsewhere = telemetry({ id: 'someone-else', token: '' })
      if (version === 5) assert.equal((await publish(c, elsewhere, '{"x":1}', 1))?.code, 0x87)
      else {
        c.publish(elsewhere, '{"x":1}', { qos: 1 }, () => {})
        await closed(c)
      }
      const hum = await waitFor(async () => {
        const s = await series(mq.p, dev.id, 'hum')
        return s.length === 3 ? s : undefined
      })
      assert.deepEqual(hum, [
        { ts: T0, value: 0 },
        { ts: T0 + 1, value: 1 },
        { ts: T0 + 2, value: 2 },
      ])
      assert.ok((await mq.p.metric('iotcore_messages_acked_total', 'transport="ws"')) >= 3)
    })
  }

  test('mosquitto_pub publishes at QoS 0, 1 and 2 over 3.1.1 and 5', async () => {
    const dev = await mq.p.createDevice('mosquitto')
    let i = 0
    for (const v of ['mqttv311', 'mqttv5']) {
      for (const qos of ['0', '1', '2']) {
        i++
        const r = await mosquittoPub([
          ...['-h', '127.0.0.1', '-p', String(mq.p.mqttPort), '-V', v, '-q', qos],
          ...['-u', dev.id, '-P', dev.token, '-t', telemetry(dev)],
          ...['-m', JSON.stringify({ msgId: `mp${i}`, ts: T0 + i, mp: i })],
        ])
        assert.equal(r.code, 0, `mosquitto_pub -V ${v} -q ${qos}: ${r.stderr}`)
      }
    }
    const mp = await waitFor(async () => {
      const s = await series(mq.p, dev.id, 'mp')
      return s.length === 6 ? s : undefined
    })
    assert.deepEqual(
      mp,
      [1, 2, 3, 4, 5, 6].map((n) => ({ ts: T0 + n, value: n })),
    )
  })

  test('a 3.1.1 client with over 1000 unacknowledged publishes and a packet cut in half is read to the end', async () => {
    const dev = await mq.p.createDevice('pipeline')
    const c = await mq.raw(4, dev)
    const n = 1200
    const packets: Buffer[] = []
    for (let i = 1; i <= n; i++) {
      packets.push(
        c.encode({
          cmd: 'publish',
          topic: telemetry(dev),
          qos: 1,
          messageId: i,
          payload: `{"msgId":"p${i}","seq":${i}}`,
        } as AnyPacket),
      )
    }
    const all = Buffer.concat(packets)
    const cut = all.length - 10
    c.write(all.subarray(0, cut))
    // The rest comes once the gateway has acked most of the first part.
    const acked = new Set<number>()
    while (acked.size < n - 1) {
      const pk = await c.next()
      assert.equal(pk.cmd, 'puback')
      acked.add(pk.messageId!)
    }
    c.write(all.subarray(cut))
    while (acked.size < n) {
      const pk = await c.next()
      assert.equal(pk.cmd, 'puback')
      acked.add(pk.messageId!)
    }
    await waitFor(async () => {
      const { rows } = await mq.p.app.store.pool.query(
        'SELECT count(*)::int AS n FROM telemetry WHERE device_pk = (SELECT pk FROM devices WHERE id = $1)',
        [dev.id],
      )
      return rows[0].n === n
    })
  })

  test('once the queue is drained, acked = stored + duplicate + quarantined', async () => {
    const sum = async () => {
      const [acked, stored, dup, quar] = await Promise.all(
        [
          'iotcore_messages_acked_total',
          'iotcore_messages_stored_total',
          'iotcore_messages_duplicate_total',
          'iotcore_messages_quarantined_total',
        ].map((m) => mq.p.metric(m)),
      )
      return { acked, accounted: stored + dup + quar }
    }
    const s = await waitFor(
      async () => {
        const q = mq.p.app.queue.stats()
        if (q.depth !== 0 || mq.p.app.queue.appending !== 0) return undefined
        const x = await sum()
        return x.acked === x.accounted ? x : undefined
      },
      undefined,
      'the counters to add up',
    )
    assert.ok(s.acked > 1200, `the tests above acked ${s.acked} readings`)
    assert.ok((await mq.p.metric('iotcore_messages_acked_total', 'transport="mqtt"')) > 0)
    assert.ok(
      (await mq.p.metric('iotcore_messages_rejected_total')) > 0,
      'refused messages are counted apart',
    )
  })
})
