import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import pg from 'pg'
import { freePort } from '../../src/store/embedded.js'
import { pgFault } from '../../src/store/outage.js'
import { freshDatabase } from '../helpers/index.js'

/** The error a real query raises, or fails the test if it raises none. */
async function failure(run: () => Promise<unknown>): Promise<unknown> {
  try {
    await run()
  } catch (err) {
    return err
  }
  throw new Error('expected the query to fail')
}

describe('PostgreSQL outage classifier', () => {
  let url: string
  let client: pg.Client
  before(async () => {
    url = await freshDatabase()
    client = new pg.Client({ connectionString: url })
    await client.connect()
    await client.query('CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)')
    await client.query('INSERT INTO t VALUES (1, 1)')
  })
  after(() => client.end())

  test('a server that is not there, or that ends the connection, is an outage', async () => {
    const nobody = new pg.Client({ host: '127.0.0.1', port: await freePort(), connectionTimeoutMillis: 5000 })
    assert.equal(pgFault(await failure(() => nobody.connect())), 'outage')

    const doomed = new pg.Client({ connectionString: url })
    doomed.on('error', () => {})
    await doomed.connect()
    const terminated = await failure(() => doomed.query('SELECT pg_terminate_backend(pg_backend_pid())'))
    assert.equal(pgFault(terminated), 'outage', String(terminated))
    const after = await failure(() => doomed.query('SELECT 1'))
    assert.equal(pgFault(after), 'outage', String(after))
    await doomed.end().catch(() => {})
  })

  test('rows the server refuses are a data fault', async () => {
    for (const sql of ["SELECT 'x'::int", 'INSERT INTO t VALUES (2, NULL)', 'SELECT 1/0']) {
      const err = await failure(() => client.query(sql))
      assert.equal(pgFault(err), 'data', `${sql}: ${err}`)
    }
  })

  test('a unique violation, a wrong statement, a wrong password or a missing database is neither', async () => {
    const wrongPassword = new URL(url)
    wrongPassword.password = 'not-the-password'
    const missing = new URL(url)
    missing.pathname = '/no_such_database'
    const errors = [
      await failure(() => client.query('INSERT INTO t VALUES (1, 1)')),
      await failure(() => client.query('SELEC 1')),
      await failure(() => client.query('SELECT * FROM no_such_table')),
      await failure(() => new pg.Client({ connectionString: wrongPassword.toString() }).connect()),
      await failure(() => new pg.Client({ connectionString: missing.toString() }).connect()),
    ]
    for (const err of errors) assert.equal(pgFault(err), 'other', String(err))
  })

  test('errors with no SQLSTATE: dropped connections and timeouts are outages, bugs are not', () => {
    assert.equal(pgFault(new Error('Connection terminated unexpectedly')), 'outage')
    assert.equal(pgFault(new Error('timeout exceeded when trying to connect')), 'outage')
    assert.equal(pgFault(new Error('batch write timed out after 60 s')), 'outage')
    assert.equal(pgFault(new TypeError("Cannot read properties of undefined (reading 'x')")), 'other')
    assert.equal(pgFault(Object.assign(new TypeError('bad arg'), { code: 'ERR_INVALID_ARG_TYPE' })), 'other')
    assert.equal(pgFault(undefined), 'other')
  })
})
