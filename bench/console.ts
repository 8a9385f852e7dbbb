/**
 * `npm run bench:console`: the web console on a large fleet, in Debian's Chromium (playwright-core): 10,000
 * devices and a week of one-second readings for one of them (604,800), loaded with COPY. Reports, as medians of
 * BENCH_ROUNDS (3) cold loads (a new browser context each: empty cache):
 *   - time to first chart: from opening #/charts/<device>/7d (signed in) to the week's first chart drawn (a
 *     sample: each bucket's first reading), and to the chart of the buckets' averages
 *   - bytes transferred for it (as sent on the wire: compressed), and the series answer alone
 *   - time to the device list of 10,000, and its bytes
 *   - frame times while the list is scrolled from top to bottom
 *   - the series query's time at the server (no browser), and the CPU it takes there (PostgreSQL's processes and
 *     this one's): on a machine shared with other work, the CPU is what the query would take on an idle one
 * Measures only; asserts nothing.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core'
import pino from 'pino'
import { EmbeddedDatabase } from '../src/store/embedded.js'
import { CHROMIUM } from '../test/helpers/browser.js'
import { loadFleet } from '../test/helpers/fleet.js'
import { ADMIN_TOKEN, startPlatform } from '../test/helpers/index.js'

/** On the browser's command line, to find its processes and count their CPU. */
const MARK = `--iotcore-bench=${process.pid}`
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3)
const DEVICES = Number(process.env.BENCH_DEVICES ?? 10_000)

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const kib = (b: number) => `${(b / 1024).toFixed(1)} KiB`

/**
 * CPU seconds used so far by the processes whose command line contains `mark` and all their descendants
 * (PostgreSQL's backends and Chromium's renderers rename themselves or drop switches: found by their parents).
 * Children that exited count in their parent's waited-for time.
 */
function treeCpu(mark: string): number {
  const procs: Array<{ pid: string; ppid: string; ticks: number; root: boolean }> = []
  for (const pid of readdirSync('/proc').filter((f) => /^\d+$/.test(f))) {
    try {
      // Fields 4 (ppid) and 14-17: user and system ticks, own and of waited-for children.
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
      const root = readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(mark)
      procs.push({
        pid,
        ppid: f[1],
        ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]),
        root,
      })
    } catch {
      // gone meanwhile
    }
  }
  const inTree = new Set(procs.filter((x) => x.root).map((x) => x.pid))
  for (let grew = true; grew; ) {
    grew = false
    for (const x of procs)
      if (!inTree.has(x.pid) && inTree.has(x.ppid)) {
        inTree.add(x.pid)
        grew = true
      }
  }
  return procs.filter((x) => inTree.has(x.pid)).reduce((n, x) => n + x.ticks, 0) / 100
}

/** This process's CPU seconds so far. */
const ownCpu = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1e6
}

/** A cold, signed-in page, with every response's bytes on the wire counted by URL path (CDP). */
async function coldPage(
  browser: Browser,
): Promise<{ ctx: BrowserContext; page: Page; bytes: Map<string, number> }> {
  const ctx = await browser.newContext({ viewport: { width: 1366, height: 860 } })
  await ctx.addInitScript((token) => sessionStorage.setItem('iotcore.adminToken', token), ADMIN_TOKEN)
  const page = await ctx.newPage()
  const cdp = await ctx.newCDPSession(page)
  await cdp.send('Network.enable')
  const urls = new Map<string, string>()
  const bytes = new Map<string, number>()
  cdp.on('Network.responseReceived', (e) => urls.set(e.requestId, new URL(e.response.url).pathname))
  cdp.on('Network.loadingFinished', (e) => {
    const path = urls.get(e.requestId) ?? '?'
    bytes.set(path, (bytes.get(path) ?? 0) + e.encodedDataLength)
  })
  return { ctx, page, bytes }
}

const total = (bytes: Map<string, number>, match = (_: string) => true) =>
  [...bytes].filter(([p]) => match(p)).reduce((n, [, b]) => n + b, 0)

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'iotcore-bench-console-'))
  const db = new EmbeddedDatabase(dir, pino({ level: 'warn' }))
  process.env.IOTCORE_TEST_DATABASE_URL = await db.start()
  const p = await startPlatform()
  let browser: Browser | undefined
  try {
    let t = performance.now()
    const fleet = await loadFleet(p.databaseUrl, { devices: DEVICES })
    console.log(
      `loaded ${DEVICES.toLocaleString()} devices and ${fleet.readings.toLocaleString()} readings with COPY in ${((performance.now() - t) / 1000).toFixed(1)} s`,
    )
    const week = `/api/v1/devices/${fleet.busy}/series?keys=rpm,speed&from=${fleet.to - 604_800_000}&to=${fleet.to + 1}&points=1366`
    const server: number[] = []
    const serverCpu: number[] = []
    const cpu = () => treeCpu(dir) + ownCpu() + treeCpu(MARK)
    for (let i = 0; i < ROUNDS; i++) {
      const cpu0 = cpu()
      t = performance.now()
      const r = await p.req('GET', week)
      if (r.status !== 200) throw new Error(`series: ${r.status}`)
      server.push(performance.now() - t)
      serverCpu.push((cpu() - cpu0) * 1000)
    }
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', MARK] })
    const chartCpu: number[] = []
    const chart: number[] = []
    const exact: number[] = []
    const chartBytes: number[] = []
    const seriesBytes: number[] = []
    const list: number[] = []
    const listBytes: number[] = []
    const frames: number[][] = []
    for (let i = 0; i < ROUNDS; i++) {
      {
        const { ctx, page, bytes } = await coldPage(browser)
        const cpu0 = cpu()
        await page.goto(`${p.base}/#/charts/${fleet.busy}/7d`)
        await page.waitForFunction(
          () => performance.getEntriesByName('iotcore:chart-drawn').length > 0,
          null,
          {
            timeout: 60_000,
          },
        )
        chartCpu.push((cpu() - cpu0) * 1000)
        chart.push(
          await page.evaluate(() => performance.getEntriesByName('iotcore:chart-drawn')[0].startTime),
        )
        await page.waitForFunction(
          () => performance.getEntriesByName('iotcore:chart-exact').length > 0,
          null,
          { timeout: 60_000 },
        )
        exact.push(
          await page.evaluate(() => performance.getEntriesByName('iotcore:chart-exact')[0].startTime),
        )
        // Responses still finishing count too; the stream never finishes and is left out.
        await page.waitForTimeout(300)
        chartBytes.push(total(bytes))
        seriesBytes.push(total(bytes, (path) => path.endsWith('/series')))
        await ctx.close()
      }
      {
        const { ctx, page, bytes } = await coldPage(browser)
        await page.goto(`${p.base}/#/devices`)
        await page.getByText(`${DEVICES.toLocaleString()} shown`).waitFor({ timeout: 60_000 })
        list.push(await page.evaluate(() => performance.now()))
        await page.waitForTimeout(300)
        listBytes.push(total(bytes, (path) => path === '/api/v1/fleet'))
        // Scrolls the whole list, a screen per frame, and records each frame's time.
        frames.push(
          await page.evaluate(async () => {
            const el = document.querySelector('.vlist') as HTMLElement
            const out: number[] = []
            let last = performance.now()
            while (el.scrollTop + el.clientHeight < el.scrollHeight - 1) {
              el.scrollTop += el.clientHeight
              await new Promise((r) => requestAnimationFrame(r))
              const now = performance.now()
              out.push(now - last)
              last = now
            }
            return out
          }),
        )
        await ctx.close()
      }
    }
    const all = frames.flat().sort((a, b) => a - b)
    const rows: Array<[string, string]> = [
      ['time to first chart, a week of 1 s readings (2 keys): a sample', `${median(chart).toFixed(0)} ms`],
      ['  CPU it takes: Chromium, PostgreSQL, the platform', `${median(chartCpu).toFixed(0)} ms`],
      ['time to the chart of averages (604,800 rows aggregated)', `${median(exact).toFixed(0)} ms`],
      ['bytes for both: page, scripts, styles, API (on the wire)', kib(median(chartBytes))],
      ['  of which the two series answers', kib(median(seriesBytes))],
      ['series query at the server (2 keys, 604,800 rows)', `${median(server).toFixed(0)} ms`],
      ['  CPU it takes (PostgreSQL and the platform)', `${median(serverCpu).toFixed(0)} ms`],
      [`time to the device list of ${DEVICES.toLocaleString()}`, `${median(list).toFixed(0)} ms`],
      ['  bytes of the fleet answers', kib(median(listBytes))],
      [
        `list scrolled top to bottom: ${frames[0].length} frames, median / p95 / max frame`,
        `${median(all).toFixed(1)} / ${all[Math.floor(all.length * 0.95)].toFixed(1)} / ${all[all.length - 1].toFixed(1)} ms`,
      ],
    ]
    console.log(
      `\nconsole bench, medians of ${ROUNDS} cold loads (Chromium ${browser.version()}; load average ${loadavg()[0].toFixed(1)} on ${cpus().length} cores)\n`,
    )
    const w = Math.max(...rows.map(([k]) => k.length))
    for (const [k, v] of rows) console.log(`  ${k.padEnd(w)}  ${v}`)
  } finally {
    await browser?.close()
    await p.stop()
    await db.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

await main()
