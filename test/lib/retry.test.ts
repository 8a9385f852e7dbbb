import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { RetryTimer } from '../../src/lib/retry.js'

describe('retry timer', () => {
  test('one attempt is pending at a time, another can be scheduled once it ran, none after stop', async () => {
    let runs = 0
    let ran = () => {}
    const retry = new RetryTimer(5, () => {
      runs++
      ran()
    })
    // The retry's timer is unref()ed: this one keeps the test's process up until the attempt runs.
    const keepAlive = setTimeout(() => {}, 60_000)
    try {
      assert.equal(retry.schedule(), true)
      assert.equal(retry.schedule(), false, 'a second schedule while one is pending adds nothing')
      await new Promise<void>((resolve) => (ran = resolve))
      assert.equal(runs, 1)
      assert.equal(retry.schedule(), true, 'after it ran, a new attempt can be scheduled')
      retry.stop()
      assert.equal(retry.schedule(), false, 'a stopped retry schedules nothing')
      await new Promise((resolve) => setTimeout(resolve, 50))
      assert.equal(runs, 1, 'the attempt pending at the stop never runs')
    } finally {
      clearTimeout(keepAlive)
    }
  })
})
