import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { connectAsync, type MqttClient } from 'mqtt'
import type { Browser } from 'playwright-core'
import { launchBrowser, PHONE, signIn, type Watched, watchedPage } from '../helpers/browser.js'
import { ADMIN_TOKEN, type Platform, startPlatform, waitFor } from '../helpers/index.js'
import { screenshot } from '../helpers/screenshots.js'

describe('the web console in a real browser', () => {
  let p: Platform
  let browser: Browser
  let w: Watched
  let device: { id: string; token: string }
  let mqtt: MqttClient

  before(async () => {
    ;[p, browser] = await Promise.all([startPlatform(), launchBrowser()])
    w = await watchedPage(browser)
  })
  after(async () => {
    await mqtt?.endAsync()
    await browser?.close()
    await p?.stop()
  })

  const publish = (reading: Record<string, unknown>) =>
    mqtt.publishAsync(`devices/${device.id}/telemetry`, JSON.stringify(reading), { qos: 1 })

  test('a wrong token gets a clear message, and the admin token signs in', async () => {
    const { page } = w
    await page.goto(p.base)
    await page.getByLabel('Admin token').fill('not-the-admin-token')
    w.expect(/HTTP 401: GET .*\/api\/v1\/console/)
    w.expect(/console error: Failed to load resource: the server responded with a status of 401/)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.getByRole('alert').getByText('This is not the admin token').waitFor()
    // The token is never put in the URL, and a wrong one is not kept.
    assert.ok(!page.url().includes('not-the-admin-token'))
    assert.equal(await page.evaluate(() => sessionStorage.length), 0)
    await signIn(page, p.base, ADMIN_TOKEN)
    assert.ok(!page.url().includes(ADMIN_TOKEN))
    w.check()
  })

  test('a device created in the console shows its token once, with snippets to connect it', async () => {
    const { page } = w
    await page.getByRole('button', { name: 'New device' }).click()
    await page.getByLabel('Name', { exact: true }).fill('truck-7')
    await page.getByRole('button', { name: 'Create' }).click()
    const token = (await page.getByTestId('device-token').textContent())!.trim()
    assert.match(token, /^iot_/)
    const tabs = await page.getByRole('tab').allTextContents()
    assert.deepEqual(tabs, ['mosquitto_pub', 'curl', 'Python (paho)', 'Go (paho)'])
    const snippet = await page.getByRole('tabpanel').textContent()
    assert.ok(snippet?.includes(`-p ${p.mqttPort}`) && snippet.includes(token), snippet ?? '')
    const open = await page.getByRole('link', { name: 'Open device' }).getAttribute('href')
    device = { id: decodeURIComponent(open!.split('/').pop()!), token }
    await screenshot(page, 'create-device-desktop')
    await page.getByRole('button', { name: 'Done' }).click()
    await page.locator(`[data-device="${device.id}"]`).waitFor()
    mqtt = await connectAsync(`mqtt://127.0.0.1:${p.mqttPort}`, {
      username: device.id,
      password: token,
      reconnectPeriod: 0,
    })
    w.check()
  })

  test('a reading published over MQTT appears live on the list, the map and the chart, without a reload', async () => {
    const { page } = w
    // A reload would lose this: it proves every update below came live.
    await page.evaluate(() => ((window as any).sameDocument = true))
    const row = page.locator(`[data-device="${device.id}"]`)
    // A minute apart: each reading is a bucket of its own on the last hour's chart.
    const t0 = Date.now() - 120_000
    await publish({ ts: t0, lat: 37.98, lon: 23.72, speed: 52.3, rpm: 2100 })
    await row.getByText('rpm 2100').waitFor()
    await row.locator('.dot.online').waitFor()

    await page.getByRole('link', { name: 'Map' }).click()
    await page.locator(`.device-${device.id}`).waitFor()
    await page.goto(`${p.base}/#/map/${device.id}`)
    await page.getByTestId('track-info').getByText('1 positions').waitFor()
    await publish({ ts: t0 + 60_000, lat: 37.99, lon: 23.73, speed: 55, rpm: 2300 })
    await page.getByTestId('track-info').getByText('2 positions').waitFor()
    await screenshot(page, 'map-track-desktop')

    await page.goto(`${p.base}/#/charts/${device.id}`)
    const status = page.getByTestId('chart-status')
    await status.getByText(/2 points/).waitFor()
    await page.locator('figure[data-key="rpm"] canvas').waitFor()
    await publish({ ts: t0 + 120_000, lat: 38.0, lon: 23.74, speed: 58, rpm: 2500 })
    await status.getByText(/3 points/).waitFor()
    assert.equal(await page.evaluate(() => (window as any).sameDocument), true)
    w.check()
  })

  test('a quarantined reading is shown with its reason and replayed corrected', async () => {
    const { page } = w
    await page.getByRole('link', { name: 'Quarantine' }).click()
    await page.getByRole('heading', { name: 'Quarantine' }).waitFor()
    await publish({ msgId: 'bad-1', lat: 999, lon: 23.7, speed: 10 })
    const card = page.locator('li.qcard').first()
    await card.getByText('invalid_value').waitFor()
    assert.match((await card.getByTestId('payload').textContent()) ?? '', /"lat": 999/)
    await card.getByRole('button', { name: 'Hex' }).click()
    assert.match((await card.getByTestId('payload').textContent()) ?? '', /^000000 {2}7b 22/)
    await card.getByRole('button', { name: 'Replay…' }).click()
    await card.getByRole('textbox').fill(JSON.stringify({ msgId: 'bad-1', lat: 38.5, lon: 23.7, speed: 10 }))
    await screenshot(page, 'quarantine-desktop')
    await card.getByRole('button', { name: 'Replay edited body' }).click()
    await page.getByText('Replayed: 1 accepted').waitFor()
    await waitFor(
      async () => (await p.req('GET', `/api/v1/devices/${device.id}/latest`)).body.values.lat?.value === 38.5,
    )
    w.check()
  })

  test('alerts: acknowledged from the page where the API has them, else the page says they are not available', async () => {
    const { page } = w
    const info = await p.req('GET', '/api/v1/console')
    if (!info.body.features.alerts) {
      // This build has no organizer alerts (GET /api/v1/alerts is a 404): the page must say so, not fail.
      assert.equal((await p.req('GET', '/api/v1/alerts')).status, 404)
      await page.getByRole('link', { name: 'Alerts' }).click()
      await page
        .getByTestId('alerts-unavailable')
        .getByText('Alerts are not available on this server')
        .waitFor()
      w.check()
      return
    }
    // With the organizer's alerts (CONTRACT.md): a device silent past IOTCORE_OFFLINE_AFTER opens an alert. On a
    // platform of its own, so the other tests' devices do not go offline in a second.
    const quiet = await startPlatform({ IOTCORE_OFFLINE_AFTER: '1', IOTCORE_CHECK_INTERVAL: '1' })
    const aw = await watchedPage(browser)
    try {
      const d = await quiet.createDevice('goes-quiet')
      assert.equal((await quiet.postTelemetry(d, { speed: 1 })).status, 202)
      const list = (b: any): any[] => (Array.isArray(b) ? b : (b?.alerts ?? b?.items ?? []))
      const alert = await waitFor(async () =>
        list((await quiet.req('GET', `/api/v1/alerts?deviceId=${d.id}&status=active`)).body).find(
          (a) => !a.acknowledged,
        ),
      )
      await signIn(aw.page, quiet.base, ADMIN_TOKEN)
      await aw.page.goto(`${quiet.base}/#/alerts`)
      const row = aw.page.locator(`tr[data-alert="${alert.id}"]`)
      await row.getByRole('button', { name: 'Acknowledge' }).click()
      await row.getByText('acknowledged').waitFor()
      await waitFor(async () =>
        list((await quiet.req('GET', `/api/v1/alerts?deviceId=${d.id}`)).body).some(
          (a) => a.id === alert.id && a.acknowledged,
        ),
      )
      await screenshot(aw.page, 'alerts-desktop')
      aw.check()
    } finally {
      await aw.page.context().close()
      await quiet.stop()
    }
  })

  test('operations show each component, the queue and the ingest rate, live', async () => {
    const { page } = w
    await page.getByRole('link', { name: 'Operations' }).click()
    await page.getByTestId('ready-status').getByText('ready').waitFor()
    const components = await page.getByTestId('components').textContent()
    for (const c of ['database', 'queue', 'ingest', 'mqtt']) assert.ok(components?.includes(c), c)
    assert.match(components ?? '', /failing: none/, 'nested details are read out, not [object Object]')
    await page.getByTestId('ingest-rate').getByText('/s').waitFor()
    await publish({ speed: 60 })
    await page
      .getByTestId('ingest-rate')
      .getByText(/^[1-9][0-9]*\/s$/)
      .waitFor()
    await screenshot(page, 'operations-desktop')
    w.check()
  })

  test('on a phone the same pages fit the screen', async () => {
    const phone = await watchedPage(browser, PHONE, { colorScheme: 'dark' })
    const { page } = phone
    await signIn(page, p.base, ADMIN_TOKEN)
    // Nothing is wider than the screen: the page never scrolls sideways.
    const fits = async (name: string) => {
      await screenshot(page, name)
      const wide = await page.evaluate(() =>
        [...document.querySelectorAll('body *')]
          .filter(
            (e) =>
              e.getBoundingClientRect().right > window.innerWidth + 1 &&
              !e.closest('.vlist, pre, .table-wrap, nav, .leaflet-container'),
          )
          .map((e) => `${e.tagName.toLowerCase()}.${[...e.classList].join('.')}`)
          .slice(0, 5),
      )
      assert.deepEqual(wide, [], `${name}: wider than the phone`)
    }
    await page.goto(`${p.base}/#/devices/${device.id}`)
    await page.getByTestId('latest').waitFor()
    await fits('device-phone')
    await page.goto(`${p.base}/#/charts/${device.id}`)
    await page.locator('figure[data-key="rpm"] canvas').waitFor()
    await fits('charts-phone')
    await page.goto(`${p.base}/#/quarantine`)
    await page.locator('li.qcard').first().waitFor()
    await fits('quarantine-phone')
    await page.goto(`${p.base}/#/map/${device.id}`)
    await page.getByTestId('track-info').getByText('4 positions').waitFor()
    await fits('map-phone')
    phone.check()
    await page.context().close()
  })
})
