import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Page } from 'playwright-core'

/**
 * Where the browser tests save their screenshots: test-results/console (ignored by git), or
 * IOTCORE_SCREENSHOT_DIR; `IOTCORE_SCREENSHOT_DIR=docs/console npm test` refreshes the README's pictures.
 */
const DIR = process.env.IOTCORE_SCREENSHOT_DIR ?? join('test-results', 'console')

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(DIR, { recursive: true })
  await page.screenshot({ path: join(DIR, `${name}.png`) })
}
