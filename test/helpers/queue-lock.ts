/**
 * Holds the local queue's LMDB write lock from another process, so that no append can become durable until it
 * is released: a test sees what a gateway does while its append waits, and when it lands, by state, not by
 * timing. LMDB allows one write transaction at a time per environment, across processes (its lock file).
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { join } from 'node:path'

export interface HeldQueue {
  /** Lets the held write transaction end; resolves once the holder has let go. */
  release(): Promise<void>
}

/** Holds the write lock of the queue in `dataDir` until `release`. */
export async function holdQueueWrites(dataDir: string): Promise<HeldQueue> {
  const child: ChildProcess = spawn(
    process.execPath,
    [new URL('./queue-lock-holder.js', import.meta.url).pathname, join(dataDir, 'queue')],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  )
  const said = (word: string) =>
    new Promise<void>((resolve, reject) => {
      let text = ''
      const onData = (d: Buffer) => {
        text += d.toString()
        if (text.includes(word)) {
          child.stdout!.off('data', onData)
          resolve()
        }
      }
      child.stdout!.on('data', onData)
      child.once('exit', (code) =>
        reject(new Error(`the lock holder exited (${code}) before saying ${word}`)),
      )
    })
  await said('held')
  return {
    async release() {
      const exited = new Promise((r) => child.once('exit', r))
      child.stdin!.end('go')
      await exited
    },
  }
}
