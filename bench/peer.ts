/**
 * The peer's subscriber, as a user without iotcore would write it: MQTT.js subscribed at QoS 1 to every
 * device's telemetry on Mosquitto, readings buffered and written every 1,000 rows or 50 ms with
 * INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING through a `pg` pool of 10. It acknowledges on
 * receipt, before storing: a weaker promise than iotcore's.
 */
import { connect } from 'mqtt'
import pg from 'pg'
import type { PeerConfig, PeerMessage } from './common.js'

const send = (m: PeerMessage) => process.send?.(m)

const INSERT = `INSERT INTO telemetry (device_id, msg_id, ts, received_at, values)
  SELECT d, m, 'epoch'::timestamptz + t * interval '1 millisecond', 'epoch'::timestamptz + r * interval '1 millisecond', v
  FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::jsonb[]) AS u(d, m, t, r, v)
  ON CONFLICT (device_id, msg_id) DO NOTHING`

function run(cfg: PeerConfig): void {
  const pool = new pg.Pool({ connectionString: cfg.databaseUrl, max: cfg.poolSize })
  pool.on('error', (err) => send({ type: 'error', error: `pg: ${err.message}` }))
  let devices: string[] = []
  let msgIds: string[] = []
  let tss: number[] = []
  let received: number[] = []
  let values: string[] = []
  let timer: NodeJS.Timeout | undefined
  let receivedCount = 0
  let stored = 0

  const flush = () => {
    if (timer) clearTimeout(timer)
    timer = undefined
    if (devices.length === 0) return
    const params = [devices, msgIds, tss, received, values]
    devices = []
    msgIds = []
    tss = []
    received = []
    values = []
    pool.query(INSERT, params).then(
      (r) => {
        stored += r.rowCount ?? 0
        send({ type: 'progress', received: receivedCount, stored })
      },
      (err: Error) => send({ type: 'error', error: `insert: ${err.message}` }),
    )
  }

  const client = connect(cfg.brokerUrl, {
    clientId: `bench-peer-${process.pid}`,
    protocolVersion: 4,
    clean: true,
    keepalive: 60,
    reconnectPeriod: 0,
  })
  client.on('error', (err) => send({ type: 'error', error: `mqtt: ${err.message}` }))
  client.on('close', () => send({ type: 'error', error: 'mqtt: connection closed' }))
  client.on('connect', () => {
    client.subscribe('devices/+/telemetry', { qos: 1 }, (err, granted) => {
      if (err || !granted || granted[0]?.qos !== 1) {
        send({ type: 'error', error: `subscribe: ${err?.message ?? JSON.stringify(granted)}` })
        return
      }
      send({ type: 'ready' })
    })
  })
  client.on('message', (topic, payload) => {
    const now = Date.now()
    // devices/<id>/telemetry
    const deviceId = topic.slice(8, topic.length - 10)
    const { ts, msgId, ...rest } = JSON.parse(payload.toString('utf8'))
    devices.push(deviceId)
    msgIds.push(String(msgId))
    tss.push(ts)
    received.push(now)
    values.push(JSON.stringify(rest))
    receivedCount++
    if (devices.length >= cfg.batchRows) flush()
    else if (timer === undefined) timer = setTimeout(flush, cfg.batchMs)
  })
}

process.once('message', (m: PeerConfig) => run(m))
process.on('disconnect', () => process.exit(0))
