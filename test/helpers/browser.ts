/**
 * A real browser for the console's tests: Debian's Chromium (`.ci/run` installs it), driven by playwright-core,
 * which downloads no browser of its own. Every page is watched: a console error, an uncaught exception, a
 * failed request or an HTTP error fails the test unless the test said it expects that one.
 */
import { type Browser, chromium, type Page } from 'playwright-core'

export const CHROMIUM = process.env.IOTCORE_TEST_CHROMIUM ?? '/usr/bin/chromium'
export const DESKTOP = { width: 1366, height: 860 }
export const PHONE = { width: 390, height: 844 }

export function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
}

/** A page and what went wrong on it. */
export interface Watched {
  page: Page
  /** Every problem seen so far, as readable lines. */
  problems: string[]
  /** Lets problems matching `pattern` through, up to `times` of them (a test that provokes an error). */
  expect(pattern: RegExp, times?: number): void
  /** Throws if anything unexpected happened on the page. */
  check(): void
}

export async function watchedPage(
  browser: Browser,
  viewport = DESKTOP,
  opts: { colorScheme?: 'light' | 'dark' } = {},
): Promise<Watched> {
  const context = await browser.newContext({ viewport, colorScheme: opts.colorScheme ?? 'light' })
  const page = await context.newPage()
  const problems: string[] = []
  const allowed: Array<{ pattern: RegExp; left: number }> = []
  const report = (line: string) => {
    const a = allowed.find((x) => x.left > 0 && x.pattern.test(line))
    if (a) a.left--
    else problems.push(line)
  }
  page.on('console', (m) => {
    if (m.type() === 'error') report(`console error: ${m.text()}`)
  })
  page.on('pageerror', (err) => report(`uncaught: ${err.message}`))
  page.on('requestfailed', (r) => {
    // The live stream is opened again, with the new page's filter, when the page changes: the old one is
    // aborted by the page itself, on purpose.
    if (r.failure()?.errorText === 'net::ERR_ABORTED' && new URL(r.url()).pathname === '/api/v1/stream')
      return
    report(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`)
  })
  page.on('response', (r) => {
    if (r.status() >= 400) report(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`)
  })
  return {
    page,
    problems,
    expect(pattern, times = 1) {
      allowed.push({ pattern, left: times })
    },
    check() {
      if (problems.length > 0) throw new Error(`problems on the page:\n${problems.join('\n')}`)
    },
  }
}

/** Signs in on the console at `base` with `token`; resolves once the app shows its pages. */
export async function signIn(page: Page, base: string, token: string): Promise<void> {
  await page.goto(base)
  await page.getByLabel('Admin token').fill(token)
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('navigation', { name: 'Pages' }).waitFor()
}
