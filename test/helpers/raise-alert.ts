/**
 * Another process, for the tests that need one: raises one device alert on the database at argv[2] (device
 * argv[3], type argv[4]) through its own Store, and exits.
 */
import { createLogger } from '../../src/logger.js'
import { Store } from '../../src/store/index.js'

const [url, deviceId, type] = process.argv.slice(2)
const store = new Store(url, createLogger('silent'), 1)
await store.alerts.raise([
  { subject: { kind: 'device', id: deviceId }, type, severity: 'major', details: { pid: process.pid } },
])
await store.stop()
