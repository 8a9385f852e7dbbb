#!/usr/bin/env python3
"""An iotcore device in Python with paho-mqtt (Debian's python3-paho-mqtt, 1.6): JSON readings over MQTT with
QoS 1, each with a msgId and a sequence number. A reading stays in `unacked` until its PUBACK comes (the
platform sends it once the reading is durably queued); after an outage paho reconnects and this sends again
what was not acknowledged. A reading that did arrive before the outage has the same msgId, so the platform
stores it once.

    /usr/bin/python3 device.py --host localhost --port 1883 --id $ID --token $TOKEN [--count 100] [--interval 1]

(or IOTCORE_MQTT_HOST, IOTCORE_MQTT_PORT, IOTCORE_DEVICE_ID, IOTCORE_DEVICE_TOKEN in the environment).
"""
import argparse
import json
import math
import os
import sys
import threading
import time

import paho.mqtt.client as mqtt


def main():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default=env("IOTCORE_MQTT_HOST", "localhost"))
    p.add_argument("--port", type=int, default=int(env("IOTCORE_MQTT_PORT", "1883")))
    p.add_argument("--id", default=env("IOTCORE_DEVICE_ID"))
    p.add_argument("--token", default=env("IOTCORE_DEVICE_TOKEN"))
    p.add_argument("--count", type=int, default=0, help="readings to send, then wait for their acks (0: forever)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    a = p.parse_args()
    if not a.id or not a.token:
        p.error("--id and --token (or IOTCORE_DEVICE_ID and IOTCORE_DEVICE_TOKEN) are required")

    topic = f"devices/{a.id}/telemetry"
    boot = int(time.time() * 1000)
    unacked = {}  # seq -> payload, until its PUBACK
    sent = {}  # seq -> the MQTTMessageInfo of its publish on the current connection
    # Set by paho's network thread; every paho call is made from this one (paho's callbacks hold its locks).
    reconnected = threading.Event()

    def on_connect(c, userdata, flags, rc):
        if rc in (4, 5):
            print(f"the platform refused the credentials: {mqtt.connack_string(rc)}", file=sys.stderr)
            os._exit(1)
        if rc == 0:
            print(f"connected to {a.host}:{a.port}", file=sys.stderr)
            reconnected.set()

    def on_disconnect(c, userdata, rc):
        if rc != 0:
            print(f"connection lost ({mqtt.error_string(rc)}); reconnecting", file=sys.stderr)

    client = mqtt.Client(client_id=a.id, clean_session=True, protocol=mqtt.MQTTv311)
    client.username_pw_set(a.id, a.token)
    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.reconnect_delay_set(min_delay=1, max_delay=5)
    # connect_async + loop_start: the network thread connects, and reconnects after every outage.
    client.connect_async(a.host, a.port, keepalive=30)
    client.loop_start()

    seq = 0
    due = time.monotonic()
    while True:
        if (not a.count or seq < a.count) and time.monotonic() >= due:
            seq += 1
            due += a.interval
            unacked[seq] = json.dumps({
                "ts": int(time.time() * 1000),
                "msgId": f"{boot}-{seq}",
                "seq": seq,
                "lat": round(37.98 + seq * 0.0001, 6),
                "lon": 23.72,
                "speed": round(40 + 20 * math.sin(seq / 10), 1),
                "fuel": round(max(5, 80 - seq * 0.01), 2),
            })
        if reconnected.is_set():
            # What the lost connection left unacknowledged goes again, oldest first.
            reconnected.clear()
            sent.clear()
        for s, info in list(sent.items()):
            if info.is_published():
                del sent[s], unacked[s]
                print(f"acked seq={s}", flush=True)
        if client.is_connected():
            for s in sorted(unacked):
                if s not in sent:
                    info = client.publish(topic, unacked[s], qos=1)
                    if info.rc == mqtt.MQTT_ERR_SUCCESS:
                        sent[s] = info
        if a.count and seq == a.count and not unacked:
            break
        time.sleep(0.05)
    print(f"done: {a.count} readings acked", flush=True)
    client.disconnect()
    client.loop_stop()


if __name__ == "__main__":
    main()
