import pino, { type Logger } from 'pino'

/** The process's root logger; every part logs through a child of it that names the component. */
export function createLogger(level: string): Logger {
  return pino({ level, base: { service: 'iotcore' } })
}
