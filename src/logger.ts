import { isatty } from 'node:tty'
import pino, { type Logger } from 'pino'
import pretty from 'pino-pretty'

/**
 * The process's root logger; every part logs through a child of it that names the component. A person at a
 * terminal reads one line per event; anything else (a file, journald, a log shipper) gets JSON lines.
 */
export function createLogger(level: string): Logger {
  const options = { level, base: { service: 'iotcore' } }
  // fd 1 rather than process.stdout.isTTY: in a worker thread process.stdout is a pipe to the main thread,
  // while fd 1 is the process's own stdout.
  if (!isatty(1)) return pino(options)
  return pino(
    options,
    // Synchronous like pino's own stdout destination, so the lines logged just before process.exit are
    // written; colors follow the terminal (NO_COLOR, FORCE_COLOR).
    pretty({
      destination: 1,
      sync: true,
      singleLine: true,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname,service,component',
      messageFormat: '{if component}{component}: {end}{msg}',
    }),
  )
}
