/**
 * The other process of queue-lock.ts: opens the queue's LMDB environment, begins a write transaction (which
 * takes LMDB's writer lock), says "held", and keeps it until its stdin brings a byte.
 */
import { readSync } from 'node:fs'
import { open } from 'lmdb'

const root = open({ path: process.argv[2], maxDbs: 4 })
root.transactionSync(() => {
  process.stdout.write('held\n')
  readSync(0, Buffer.alloc(1))
})
await root.close()
