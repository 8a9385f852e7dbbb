import { useState } from 'preact/hooks'
import { server } from '../state'
import { CopyButton } from './copy'

interface Target {
  id: string
  token: string
  imei: string | null
}

interface Snippet {
  name: string
  code: string
}

const SAMPLE = '{"lat":37.98,"lon":23.72,"speed":52.3}'

/**
 * How to connect a device, ready to paste: the MQTT and HTTP clients always; Teltonika and Traccar Client
 * settings when those listeners are on and the device has the IMEI they identify it by.
 */
export function snippets(d: Target): Snippet[] {
  const l = server.info?.listeners
  const host = location.hostname
  const mqtt = l?.mqtt ?? 1883
  const topic = `devices/${d.id}/telemetry`
  const out: Snippet[] = []
  if (l?.mqtt !== null) {
    out.push({
      name: 'mosquitto_pub',
      code: `mosquitto_pub -h ${host} -p ${mqtt} -q 1 -u ${d.id} -P '${d.token}' \\\n  -t ${topic} -m '${SAMPLE}'`,
    })
  }
  out.push({
    name: 'curl',
    code:
      `curl -X POST ${location.origin}/api/v1/devices/${d.id}/telemetry \\\n` +
      `  -H 'authorization: Bearer ${d.token}' -H 'content-type: application/json' \\\n  -d '${SAMPLE}'`,
  })
  if (l?.mqtt !== null) {
    out.push({
      name: 'Python (paho)',
      code: `# pip install paho-mqtt  (1.x or 2.x)
import json, time
import paho.mqtt.client as mqtt

client = mqtt.Client(client_id="${d.id}")
client.username_pw_set("${d.id}", "${d.token}")
client.connect("${host}", ${mqtt})
client.loop_start()
reading = {"ts": int(time.time() * 1000), "lat": 37.98, "lon": 23.72, "speed": 52.3}
client.publish("${topic}", json.dumps(reading), qos=1).wait_for_publish()
client.loop_stop()
client.disconnect()`,
    })
    out.push({
      name: 'Go (paho)',
      code: `// go get github.com/eclipse/paho.mqtt.golang
package main

import (
	"encoding/json"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

func main() {
	opts := mqtt.NewClientOptions().AddBroker("tcp://${host}:${mqtt}").
		SetClientID("${d.id}").SetUsername("${d.id}").SetPassword("${d.token}")
	c := mqtt.NewClient(opts)
	if t := c.Connect(); t.Wait() && t.Error() != nil {
		panic(t.Error())
	}
	reading, _ := json.Marshal(map[string]any{"ts": time.Now().UnixMilli(), "lat": 37.98, "lon": 23.72, "speed": 52.3})
	if t := c.Publish("${topic}", 1, false, reading); t.Wait() && t.Error() != nil {
		panic(t.Error())
	}
	c.Disconnect(250)
}`,
    })
  }
  if (l?.teltonika != null) {
    out.push({
      name: 'Teltonika',
      code: d.imei
        ? `Teltonika Configurator → GPRS → Server settings
  Domain:         ${host}
  Port:           ${l.teltonika}
  Protocol:       TCP (UDP works too, same port)
Data protocol:    Codec 8 or Codec 8 Extended
The tracker's IMEI must be ${d.imei} (registered with this device).`
        : 'Teltonika trackers identify themselves by IMEI: create the device with its IMEI to connect one.',
    })
  }
  if (l?.osmand != null) {
    out.push({
      name: 'Traccar Client',
      code: d.imei
        ? `Traccar Client app → Settings
  Device identifier:  ${d.imei}
  Server URL:         http://${host}:${l.osmand}
  Location accuracy:  high
  Frequency:          30 s`
        : 'Traccar Client identifies a phone by its device identifier: create the device with an IMEI (any unique id) to connect one.',
    })
  }
  return out
}

/** The device's token, shown once, and the snippets that use it, one tab each. */
export function TokenAndSnippets({ device, title }: { device: Target; title: string }) {
  const list = snippets(device)
  const [tab, setTab] = useState(0)
  const current = list[Math.min(tab, list.length - 1)]
  return (
    <section class="token" aria-label={title}>
      <h3>{title}</h3>
      <p class="warn">This token is shown once: copy it now. Only its hash is kept.</p>
      <div class="row">
        <code class="secret" data-testid="device-token">
          {device.token}
        </code>
        <CopyButton text={device.token} label="Copy token" />
      </div>
      <div class="tabs" role="tablist" aria-label="Connection snippets">
        {list.map((s, i) => (
          <button
            key={s.name}
            type="button"
            role="tab"
            id={`snip-tab-${i}`}
            aria-selected={i === tab}
            aria-controls="snip-panel"
            onClick={() => setTab(i)}
          >
            {s.name}
          </button>
        ))}
      </div>
      <div id="snip-panel" role="tabpanel" aria-labelledby={`snip-tab-${tab}`} class="snippet">
        <pre>
          <code>{current.code}</code>
        </pre>
        <CopyButton text={current.code} />
      </div>
    </section>
  )
}
