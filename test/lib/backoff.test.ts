import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { Backoff, pause } from '../../src/lib/backoff.js'

describe('backoff', () => {
  test('the ceiling doubles from the minimum with each failure up to the cap, and a success resets it', () => {
    const b = new Backoff(200, 5000)
    const ceilings: number[] = []
    for (let i = 0; i < 8; i++) {
      b.next()
      ceilings.push(b.ceiling())
    }
    assert.deepEqual(ceilings, [200, 400, 800, 1600, 3200, 5000, 5000, 5000])
    for (let i = 0; i < 1000; i++) b.next()
    assert.equal(b.ceiling(), 5000, 'no overflow after many failures')
    b.reset()
    assert.equal(b.failures, 0)
    b.next()
    assert.equal(b.ceiling(), 200)
  })

  test('full jitter: every pause lies between 0 and the ceiling, and they differ', () => {
    const b = new Backoff(250, 5000)
    for (let i = 0; i < 6; i++) b.next()
    const pauses = Array.from({ length: 200 }, () => {
      const p = b.next()
      assert.ok(p >= 0 && p <= 5000, `${p} within [0, 5000]`)
      return p
    })
    assert.ok(new Set(pauses).size > 100, 'pauses are drawn, not fixed')
    assert.ok(
      pauses.some((p) => p < 2500),
      'the whole range is used, not only its upper half (equal jitter)',
    )
  })

  test('an aborted signal ends a pause', async () => {
    const ac = new AbortController()
    const waiting = pause(3_600_000, ac.signal)
    ac.abort()
    await waiting
    await pause(3_600_000, ac.signal)
  })
})
