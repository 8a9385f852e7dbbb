import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { IotError } from '../../src/errors.js'
import { type Store, TelemetryBatch } from '../../src/store/index.js'
import { freshStore, keysetPages } from '../helpers/index.js'

describe('store: devices and credentials', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
  })
  after(() => store.stop())

  test('create returns the row as get reads it, never the token hash', async () => {
    const row = await store.devices.create({
      id: 'd-create',
      name: 'truck',
      imei: '490154203237518',
      tokenHash: 'h-create',
      attributes: { fleet: 'north' },
    })
    assert.deepEqual(await store.devices.get('d-create'), row)
    assert.equal(row.imei, '490154203237518')
    assert.deepEqual(row.attributes, { fleet: 'north' })
    assert.equal(row.lastSeenAt, null)
    assert.ok(!Number.isNaN(Date.parse(row.createdAt)))
    assert.equal('tokenHash' in row, false)
    assert.equal(await store.devices.get('d-none'), undefined)
  })

  test('a taken id or imei is IOT_ERR_DEVICE_CONFLICT naming which one', async () => {
    await store.devices.create({ id: 'd-taken', name: 'a', imei: '111', tokenHash: 'h-taken' })
    const conflict = (field: string) => (err: unknown) =>
      err instanceof IotError && err.code === 'IOT_ERR_DEVICE_CONFLICT' && err.message.includes(field)
    await assert.rejects(
      store.devices.create({ id: 'd-taken', name: 'b', tokenHash: 'h-other' }),
      conflict(' id '),
    )
    await assert.rejects(
      store.devices.create({ id: 'd-other', name: 'b', imei: '111', tokenHash: 'h-other2' }),
      conflict(' imei '),
    )
  })

  test('list pages in creation order, ties by id, both ways; the last page says it is the last', async () => {
    const s = await freshStore()
    try {
      for (const id of ['p3', 'p1', 'p2', 'p4', 'p5'])
        await s.devices.create({ id, name: id, tokenHash: `h-${id}` })
      // Devices created in one instant (an import) still page in a total order.
      await s.pool.query("UPDATE devices SET created_at = '2026-01-01T00:00:00.000001Z' WHERE id <> 'p5'")
      const walk = async (order: 'asc' | 'desc') =>
        (await keysetPages((after) => s.devices.list(2, order, after))).map((p) => p.map((d) => d.id))
      assert.deepEqual(await walk('asc'), [['p1', 'p2'], ['p3', 'p4'], ['p5']])
      assert.deepEqual(await walk('desc'), [['p5', 'p4'], ['p3', 'p2'], ['p1']])
      assert.deepEqual((await s.devices.list(5, 'asc')).next, null)
    } finally {
      await s.stop()
    }
  })

  test('delete removes the device with its telemetry; false when there was none', async () => {
    await store.devices.create({ id: 'd-del', name: 'x', tokenHash: 'h-del' })
    const batch = new TelemetryBatch()
    batch.add('d-del', 'm1', 1000, 1000, { speed: 1 })
    assert.equal((await store.writeBatch(batch, [])).stored, 1)
    // Telemetry rows carry the device's integer key, gone with the device row: ask by the key it had.
    const { pk } = (await store.pool.query("SELECT pk FROM devices WHERE id = 'd-del'")).rows[0]
    const left = () => store.pool.query('SELECT count(*)::int AS n FROM telemetry WHERE device_pk = $1', [pk])
    assert.equal((await left()).rows[0].n, 1)
    assert.equal(await store.devices.delete('d-del'), true)
    assert.equal(await store.devices.get('d-del'), undefined)
    assert.equal((await left()).rows[0].n, 0)
    assert.equal(await store.devices.delete('d-del'), false)
  })

  test('credentials: every device with its hash and imei, one by id, a new hash after setTokenHash', async () => {
    await store.devices.create({ id: 'd-cred', name: 'x', imei: '222', tokenHash: 'h-cred-1' })
    assert.deepEqual(await store.devices.credential('d-cred'), {
      id: 'd-cred',
      tokenHash: 'h-cred-1',
      imei: '222',
    })
    assert.equal(await store.devices.setTokenHash('d-cred', 'h-cred-2'), true)
    assert.equal((await store.devices.credential('d-cred'))?.tokenHash, 'h-cred-2')
    const all = await store.devices.credentials()
    assert.deepEqual(
      all.find((c) => c.id === 'd-cred'),
      { id: 'd-cred', tokenHash: 'h-cred-2', imei: '222' },
    )
    assert.equal(all.length, (await store.devices.list(1000, 'asc')).items.length)
    assert.equal(await store.devices.setTokenHash('d-none', 'h'), false)
    assert.equal(await store.devices.credential('d-none'), undefined)
  })
})
