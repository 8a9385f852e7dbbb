import { closeSync, constants, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { tryLock, unlock } from 'fs-native-extensions'
import { IotError } from '../../errors.js'

/** In the queue directory, beside LMDB's files. */
const LOCK_FILE = 'append.lock'

/**
 * The one-appender rule of a local queue, held as an exclusive OS lock on `<queue dir>/append.lock` for as long
 * as the process appends: an open-file-description lock (fcntl F_OFD_SETLK) on Linux, flock on macOS,
 * LockFileEx on Windows, through fs-native-extensions. The kernel drops it with the last descriptor, that is
 * when the process ends however it ends (SIGKILL, OOM, power loss), so a crash leaves nothing stale, and no
 * pid is ever trusted: a pid file with a liveness check would take a recycled pid, or another container's
 * (every container's first process is pid 1), for a live holder. Node opens files close-on-exec, so no child
 * process inherits it. The holder's pid is written into the file only to name it in the error.
 *
 * Returns the locked descriptor; throws IOT_ERR_QUEUE_LOCKED if another holder has the lock (another process,
 * or another open of it in this one).
 */
export function lockAppends(dir: string): number {
  const path = join(dir, LOCK_FILE)
  // Read-write: an exclusive lock needs a descriptor open for writing.
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o644)
  let locked = false
  try {
    locked = tryLock(fd)
  } finally {
    if (!locked) closeSync(fd)
  }
  if (!locked) {
    let holder = ''
    try {
      holder = readFileSync(path, 'utf8').trim()
    } catch {
      // Windows locks are mandatory: the holder's file is unreadable while it is held. The pid is only a hint.
    }
    throw new IotError('IOT_ERR_QUEUE_LOCKED', [dir, holder || 'unknown'])
  }
  ftruncateSync(fd, 0)
  writeSync(fd, `${process.pid}\n`, 0)
  return fd
}

export function unlockAppends(fd: number): void {
  unlock(fd)
  closeSync(fd)
}
