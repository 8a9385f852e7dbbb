import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { Attempt, Store, Subject } from '../../src/store/index.js'
import { freshStore } from '../helpers/index.js'

const failed: Attempt = { delivered: false, statusCode: 500, error: 'answered HTTP 500', durationMs: 3 }
const delivered: Attempt = { delivered: true, statusCode: 200, error: null, durationMs: 2 }

describe('store: webhooks and their deliveries', () => {
  let store: Store
  before(async () => {
    store = await freshStore()
  })
  after(() => store.stop())

  test("each event gets a delivery per webhook that takes its type, and an alert's go out one at a time, in order", async () => {
    const all = await store.webhooks.create({
      url: 'http://127.0.0.1:9/all',
      events: null,
      secret: 's'.repeat(16),
    })
    const opens = await store.webhooks.create({
      url: 'http://127.0.0.1:9/opens',
      events: ['alert.opened'],
      secret: 't'.repeat(16),
    })
    const subject: Subject = { kind: 'device', id: 'd1' }
    const [a] = await store.alerts.raise([{ subject, type: 'offline', severity: 'major' }])
    await store.alerts.acknowledge(a.id)
    await store.alerts.clearById(a.id)
    const [b] = await store.alerts.raise([
      { subject: { kind: 'device', id: 'd2' }, type: 'offline', severity: 'major' },
    ])

    // The first claim hands out the head of each (webhook, alert): a's opened to both, b's opened to both.
    const first = await store.webhooks.claimDue(100, 60)
    const heads = first.map(
      (d) => `${d.webhookId}/${(d.event.data.alert as { id: string }).id}/${d.event.type}`,
    )
    assert.deepEqual(heads.sort(), [
      `${all.id}/${a.id}/alert.opened`,
      `${all.id}/${b.id}/alert.opened`,
      `${opens.id}/${a.id}/alert.opened`,
      `${opens.id}/${b.id}/alert.opened`,
    ])
    assert.deepEqual(await store.webhooks.claimDue(100, 60), [], 'claimed ones are leased, the rest wait')

    // a's opened fails for `all`: its acknowledged stays behind it, however long.
    const aOpenedAll = first.find(
      (d) =>
        d.webhookId === all.id && d.event.data.alert && (d.event.data.alert as { id: string }).id === a.id,
    )!
    assert.equal(await store.webhooks.recordAttempt(aOpenedAll.id, failed, 0, 3600), 'pending')
    const retried = await store.webhooks.claimDue(100, 60)
    assert.deepEqual(
      retried.map((d) => d.id),
      [aOpenedAll.id],
      'the failed one again, not the next event of its alert',
    )
    assert.equal(retried[0].attempts, 1)
    assert.equal(await store.webhooks.recordAttempt(aOpenedAll.id, delivered, 0, 3600), 'delivered')
    const next = await store.webhooks.claimDue(100, 60)
    assert.deepEqual(
      next.map((d) => d.event.type),
      ['alert.acknowledged'],
    )
    assert.equal(await store.webhooks.recordAttempt(next[0].id, delivered, 0, 3600), 'delivered')
    assert.deepEqual(
      (await store.webhooks.claimDue(100, 60)).map((d) => d.event.type),
      ['alert.cleared'],
    )

    // Every attempt is listed with its delivery.
    const page = await store.webhooks.deliveries(all.id, { limit: 10, order: 'asc' })
    const aOpened = page.items.find((d) => d.id === aOpenedAll.id)!
    assert.equal(aOpened.status, 'delivered')
    assert.deepEqual(
      aOpened.attempts.map((t) => [t.statusCode, t.error]),
      [
        [500, 'answered HTTP 500'],
        [200, null],
      ],
    )
    assert.match(aOpened.attempts[0].at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    assert.equal(
      (await store.webhooks.deliveries(opens.id, { limit: 10, order: 'asc' })).items.length,
      2,
      'the webhook for opened events got no acknowledged or cleared',
    )
  })

  test('a delivery is given up once its next attempt would fall past the retry period; the next event goes on', async () => {
    const w = await store.webhooks.create({
      url: 'http://127.0.0.1:9/x',
      events: null,
      secret: 'u'.repeat(16),
    })
    const [a] = await store.alerts.raise([
      { subject: { kind: 'device', id: 'g1' }, type: 'gone', severity: 'minor' },
    ])
    await store.alerts.clearById(a.id)
    const mine = async () => (await store.webhooks.claimDue(100, 60)).filter((d) => d.webhookId === w.id)
    const [opened] = await mine()
    assert.equal(await store.webhooks.recordAttempt(opened.id, failed, 10_000, 5), 'failed')
    const [cleared] = await mine()
    assert.equal(cleared.event.type, 'alert.cleared')
    const list = await store.webhooks.deliveries(w.id, { status: 'failed', limit: 10, order: 'desc' })
    assert.deepEqual(
      list.items.map((d) => d.id),
      [opened.id],
    )
    assert.notEqual(list.items[0].finishedAt, null)
  })

  test('hurry makes the deliveries waiting out a backoff due now', async () => {
    const w = await store.webhooks.create({
      url: 'http://127.0.0.1:9/h',
      events: null,
      secret: 'v'.repeat(16),
    })
    const raised = await store.alerts.raise(
      [1, 2, 3].map((i) => ({
        subject: { kind: 'device' as const, id: `h${i}` },
        type: 'hurry',
        severity: 'minor' as const,
      })),
    )
    const mine = async () => (await store.webhooks.claimDue(100, 60)).filter((d) => d.webhookId === w.id)
    const due = await mine()
    assert.equal(due.length, 3)
    for (const d of due) await store.webhooks.recordAttempt(d.id, failed, 3_600_000, 86_400)
    assert.deepEqual(await mine(), [])
    await store.webhooks.hurry([w.id])
    assert.equal((await mine()).length, raised.length)
  })

  test('a test event goes to its webhook alone; deleting a webhook removes its deliveries', async () => {
    const w = await store.webhooks.create({
      url: 'http://127.0.0.1:9/t',
      events: ['alert.opened'],
      secret: 'w'.repeat(16),
    })
    const fired = await store.webhooks.test(w.id)
    assert.ok(fired)
    const d = await store.webhooks.deliveries(w.id, { limit: 10, order: 'desc' })
    assert.deepEqual(
      d.items.map((x) => [x.id, x.eventId, x.eventType]),
      [[fired.deliveryId, fired.eventId, 'webhook.test']],
    )
    assert.equal(await store.webhooks.test('424242'), undefined)
    assert.equal(await store.webhooks.delete(w.id), true)
    assert.equal(await store.webhooks.delete(w.id), false)
    assert.equal((await store.webhooks.deliveries(w.id, { limit: 10, order: 'desc' })).items.length, 0)
  })

  test('a rotated secret keeps the previous one signing until it expires', async () => {
    const w = await store.webhooks.create({
      url: 'http://127.0.0.1:9/r',
      events: null,
      secret: 'old-secret-0123456',
    })
    const rotated = await store.webhooks.rotateSecret(w.id, 'new-secret-0123456', 3600)
    assert.notEqual(rotated?.previousSecretExpiresAt, null)
    await store.webhooks.test(w.id)
    const [d] = (await store.webhooks.claimDue(100, 60)).filter((x) => x.webhookId === w.id)
    assert.deepEqual(d.secrets, ['new-secret-0123456', 'old-secret-0123456'])
    await store.webhooks.rotateSecret(w.id, 'newer-secret-01234', 0)
    await store.webhooks.test(w.id)
    await store.webhooks.recordAttempt(d.id, delivered, 0, 60)
    const [e] = (await store.webhooks.claimDue(100, 60)).filter((x) => x.webhookId === w.id)
    assert.deepEqual(e.secrets, ['newer-secret-01234'])
  })
})
