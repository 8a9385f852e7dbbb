import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Config } from '../config/index.js'

export interface AdminToken {
  token: string
  /** True until a start that got through has printed the generated token (see `markShown`). */
  show: boolean
  /** Where a generated token is kept. */
  file: string
}

/**
 * The admin API's bearer token: IOTCORE_ADMIN_TOKEN, else generated on first start and kept in the data dir
 * (mode 600), so every later start and every process on the data dir uses the same one. It lives with the API
 * it guards, not in src/config: reading the configuration has no side effects, and this writes a file.
 */
export function adminToken(config: Config): AdminToken {
  const file = join(config.dataDir, 'admin-token')
  if (config.adminToken) return { token: config.adminToken, show: false, file }
  if (!existsSync(file)) {
    mkdirSync(config.dataDir, { recursive: true })
    writeFileSync(file, 'adm_' + randomBytes(24).toString('base64url') + '\n', { mode: 0o600 })
  }
  return { token: readFileSync(file, 'utf8').trim(), show: !existsSync(file + '.shown'), file }
}

/** The token was printed: later starts only say where it is. */
export function markAdminTokenShown(admin: AdminToken): void {
  writeFileSync(admin.file + '.shown', '')
}
