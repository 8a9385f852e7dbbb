import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { join } from 'node:path'
import { App } from '../../src/app.js'
import { isIotError } from '../../src/errors.js'
import { createLogger } from '../../src/logger.js'
import { ADMIN_TOKEN, type Platform, freshDatabase, startPlatform, testConfig } from '../helpers/index.js'
import { createDeviceOverTls, type KeyPair, Pki, httpsJson } from '../helpers/pki.js'
import { drained, rows } from '../helpers/stored.js'

describe('HTTPS: with IOTCORE_TLS_CERT/KEY the HTTP port serves TLS only', () => {
  const pki = new Pki()
  let ca: KeyPair
  let p: Platform

  before(async () => {
    ca = pki.ca()
    const server = pki.issue(ca, 'localhost', 'server')
    p = await startPlatform({ IOTCORE_TLS_CERT: server.cert, IOTCORE_TLS_KEY: server.key })
  })
  after(async () => {
    await p.stop()
    pki.remove()
  })

  test('the admin API and HTTP ingest answer over HTTPS; /readyz shows the certificate', async () => {
    const dev = await createDeviceOverTls(p.httpPort, ca.cert, { name: 'https' })
    const read = await httpsJson(p.httpPort, ca.cert, 'GET', `/api/v1/devices/${dev.id}`, {
      token: ADMIN_TOKEN,
    })
    assert.deepEqual([read.status, read.body.id], [200, dev.id])
    const post = await httpsJson(p.httpPort, ca.cert, 'POST', `/api/v1/devices/${dev.id}/telemetry`, {
      token: dev.token,
      body: { msgId: 'h1', x: 1 },
    })
    assert.deepEqual([post.status, post.body], [202, { accepted: 1 }])
    await drained(p)
    assert.deepEqual(
      (await rows(p, dev.id)).map((r) => r.values.x),
      [1],
    )
    const ready = await httpsJson(p.httpPort, ca.cert, 'GET', '/readyz')
    assert.equal(ready.status, 200)
    assert.equal(ready.body.components.tls.subject, 'CN=localhost')
  })

  test("the platform does not start with a key that is not the certificate's, and says which variable", async () => {
    const other = pki.issue(ca, 'localhost', 'server')
    const server = pki.issue(ca, 'localhost', 'server')
    const env = { IOTCORE_TLS_CERT: server.cert, IOTCORE_TLS_KEY: other.key }
    const app = new App(testConfig(await freshDatabase(), join(pki.dir, 'data'), env), createLogger('silent'))
    await assert.rejects(
      app.start(),
      (err: Error) =>
        isIotError(err, 'IOT_ERR_CONFIG_INVALID') &&
        /IOTCORE_TLS_KEY=.*not the private key/.test(err.message),
    )
  })

  test('plain HTTP on the HTTPS port is not served', async () => {
    await assert.rejects(fetch(`http://127.0.0.1:${p.httpPort}/healthz`))
  })
})
