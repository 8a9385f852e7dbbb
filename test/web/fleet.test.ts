import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import type { Browser } from 'playwright-core'
import { launchBrowser, PHONE, signIn, type Watched, watchedPage } from '../helpers/browser.js'
import { type LoadedFleet, loadFleet } from '../helpers/fleet.js'
import { ADMIN_TOKEN, type Platform, startPlatform } from '../helpers/index.js'
import { screenshot } from '../helpers/screenshots.js'

describe('the console with 10,000 devices and a week of one-second readings', () => {
  let p: Platform
  let browser: Browser
  let w: Watched
  let fleet: LoadedFleet

  before(async () => {
    ;[p, browser] = await Promise.all([startPlatform(), launchBrowser()])
    fleet = await loadFleet(p.databaseUrl)
    w = await watchedPage(browser)
    await signIn(w.page, p.base, ADMIN_TOKEN)
  })
  after(async () => {
    await browser?.close()
    await p?.stop()
  })

  test('the device list draws only the rows in view and scrolls to the last of 10,000', async () => {
    const { page } = w
    await page.getByText('10,000 shown').waitFor()
    const drawn = await page.locator('.vrow').count()
    assert.ok(drawn > 5 && drawn < 100, `${drawn} rows drawn`)
    await screenshot(page, 'devices-desktop')
    await page.getByLabel('Sort by').selectOption('name')
    const list = page.getByRole('list', { name: 'Devices' })
    await list.locator('a').first().focus()
    await page.keyboard.press('End')
    await page.locator('[data-device="dfleet009999"]').waitFor()
    assert.equal(
      await page.evaluate(() => document.activeElement?.getAttribute('data-device')),
      'dfleet009999',
    )
    await page.getByLabel('Search devices').fill('vehicle-0424')
    await page.getByText('10 shown').waitFor()
    w.check()
  })

  test("the map clusters the fleet's last positions", async () => {
    const { page } = w
    await page.getByRole('link', { name: 'Map' }).click()
    await page.getByTestId('map-count').getByText('10,000 devices with a position').waitFor()
    await page.locator('.cluster').first().waitFor()
    const clusters = await page.locator('.cluster').count()
    assert.ok(clusters > 0 && clusters < 500, `${clusters} clusters`)
    await screenshot(page, 'map-desktop')
    w.check()
  })

  test('a week of one-second readings draws as one chart per key, and a drag zooms in at a finer interval', async () => {
    const { page } = w
    await page.goto(`${p.base}/#/charts/${fleet.busy}/7d`)
    const status = page.getByTestId('chart-status')
    await status.getByText('one per 10 min').waitFor()
    await page.locator('figure[data-key="speed"] canvas').waitFor()
    await screenshot(page, 'charts-desktop')
    const over = page.locator('figure[data-key="speed"] .u-over')
    const box = (await over.boundingBox())!
    await page.mouse.move(box.x + box.width * 0.45, box.y + box.height / 2)
    await page.mouse.down()
    await page.mouse.move(box.x + box.width * 0.5, box.y + box.height / 2, { steps: 5 })
    await page.mouse.up()
    await page.getByRole('button', { name: 'Reset zoom' }).waitFor()
    // About a twentieth of the week: an interval of a minute or less.
    await status.getByText(/one per (\d+ s|1 min)/).waitFor()
    w.check()
  })

  test('the list and the map on a phone', async () => {
    const phone = await watchedPage(browser, PHONE)
    await signIn(phone.page, p.base, ADMIN_TOKEN)
    await phone.page.getByText('10,000 shown').waitFor()
    await screenshot(phone.page, 'devices-phone')
    await phone.page.getByRole('link', { name: 'Map' }).click()
    await phone.page.locator('.cluster').first().waitFor()
    await screenshot(phone.page, 'map-phone-fleet')
    phone.check()
    await phone.page.context().close()
  })
})
