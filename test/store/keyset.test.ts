import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { isKeyset, QUARANTINE_ID } from '../../src/store/index.js'

describe('store: keysets from clients', () => {
  test('only a keyset PostgreSQL can bind passes: µs digits within timestamptz, an id it can compare', () => {
    assert.equal(isKeyset({ at: '1795420800000000', id: 'm1' }), true)
    assert.equal(isKeyset({ at: '0', id: '' }), true)
    assert.equal(isKeyset({ at: '253402300799999999', id: 'x' }), true)
    const refused: unknown[] = [
      null,
      'x',
      [],
      { at: 1795420800000000, id: 'm1' },
      { at: '-1', id: 'm1' },
      { at: '1.5', id: 'm1' },
      { at: '253402300800000000', id: 'm1' },
      { at: '9999999999999999999', id: 'm1' },
      { at: '1', id: 'a\u0000b' },
      { at: '1', id: 'a\ud800' },
      { at: '1', id: 'x'.repeat(257) },
      { at: '1', id: 7 },
      { at: '1' },
    ]
    for (const k of refused) assert.equal(isKeyset(k), false, JSON.stringify(k))
    assert.equal(isKeyset({ at: '1', id: '42' }, QUARANTINE_ID), true)
    assert.equal(isKeyset({ at: '1', id: '4e2' }, QUARANTINE_ID), false)
    assert.equal(isKeyset({ at: '1', id: '1234567890123456789' }, QUARANTINE_ID), false)
  })
})
