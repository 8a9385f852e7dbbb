#!/usr/bin/env python3
"""An iotcore device in Python with paho-mqtt (Debian's python3-paho-mqtt, 1.6): JSON readings over MQTT with
QoS 1, each with a msgId and a sequence number. A reading stays in `unacked` until its PUBACK comes (the
platform sends it once the reading is durably queued); after an outage paho reconnects and this sends again
what was not acknowledged. A reading that did arrive before the outage has the same msgId, so the platform
stores it once.

It also keeps its last HISTORY readings by seq and answers the platform's `resend` command (on
devices/<id>/commands, sent to a device created with the attribute "resend": true when its seq skips a range):
it publishes again the readings of that range it still has, as they were (same msgId: stored once), and
answers on devices/<id>/commands/ack. `--lose A-B` makes readings A..B but does not send them, as a link that
lost them would, to see that happen.

    /usr/bin/python3 device.py --host localhost --port 1883 --id $ID --token $TOKEN [--count 100] [--interval 1]
        [--lose 5-8]

(or IOTCORE_MQTT_HOST, IOTCORE_MQTT_PORT, IOTCORE_DEVICE_ID, IOTCORE_DEVICE_TOKEN in the environment).
"""
import argparse
import json
import math
import os
import queue
import sys
import threading
import time

import paho.mqtt.client as mqtt

# Readings kept for a resend, the newest: a few minutes at one a second, a few hundred KiB.
HISTORY = 1000


def seq_range(text):
    """`A-B` as (A, B), for --lose."""
    try:
        a, b = (int(x) for x in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a range A-B")
    if a < 1 or b < a:
        raise argparse.ArgumentTypeError(f"{text!r}: want 1 <= A <= B")
    return a, b


def resend_range(params):
    """A resend command's (from, to), or None if its params are not two integers from <= to."""
    if not isinstance(params, dict):
        return None
    a, b = params.get("from"), params.get("to")
    ok = all(isinstance(x, int) and not isinstance(x, bool) for x in (a, b))
    return (a, b) if ok and a <= b else None


def main():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default=env("IOTCORE_MQTT_HOST", "localhost"))
    p.add_argument("--port", type=int, default=int(env("IOTCORE_MQTT_PORT", "1883")))
    p.add_argument("--id", default=env("IOTCORE_DEVICE_ID"))
    p.add_argument("--token", default=env("IOTCORE_DEVICE_TOKEN"))
    p.add_argument("--count", type=int, default=0, help="readings to send, then wait for their acks (0: forever)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    p.add_argument("--lose", type=seq_range, help="make readings A-B but do not send them (a lost range)")
    a = p.parse_args()
    if not a.id or not a.token:
        p.error("--id and --token (or IOTCORE_DEVICE_ID and IOTCORE_DEVICE_TOKEN) are required")

    topic = f"devices/{a.id}/telemetry"
    commands_topic = f"devices/{a.id}/commands"
    boot = int(time.time() * 1000)
    history = {}  # seq -> payload, the last HISTORY readings, for a resend
    unacked = {}  # seq -> payload, until its PUBACK
    sent = {}  # seq -> the MQTTMessageInfo of its publish on the current connection
    # Set by paho's network thread; every paho call is made from this one (paho's callbacks hold its locks).
    reconnected = threading.Event()
    commands = queue.Queue()

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
    client.on_message = lambda c, userdata, msg: commands.put(msg.payload)
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
            history[seq] = json.dumps({
                "ts": int(time.time() * 1000),
                "msgId": f"{boot}-{seq}",
                "seq": seq,
                "lat": round(37.98 + seq * 0.0001, 6),
                "lon": 23.72,
                "speed": round(40 + 20 * math.sin(seq / 10), 1),
                "fuel": round(max(5, 80 - seq * 0.01), 2),
            })
            history.pop(seq - HISTORY, None)
            if not a.lose or not a.lose[0] <= seq <= a.lose[1]:
                unacked[seq] = history[seq]
        if reconnected.is_set():
            # What the lost connection left unacknowledged goes again, oldest first. A clean session forgets
            # its subscriptions: subscribe again.
            reconnected.clear()
            sent.clear()
            client.subscribe(commands_topic, qos=1)
        answers = []
        while not commands.empty():
            answer = run_command(commands.get(), history, unacked, seq)
            if answer:
                answers.append(answer)
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
        # After the readings a resend put back, so the platform has them when it reads the answer.
        for answer in answers:
            client.publish(f"{commands_topic}/ack", json.dumps(answer), qos=1)
        if a.count and seq == a.count and not unacked:
            break
        time.sleep(0.05)
    print(f"done: {a.count} readings acked", flush=True)
    client.disconnect()
    client.loop_stop()


def run_command(payload, history, unacked, seq):
    """Runs a command from the platform; returns the answer for devices/<id>/commands/ack (None: none)."""
    try:
        cmd = json.loads(payload)
        cid, name, params = str(cmd["id"]), cmd["name"], cmd.get("params", {})
    except (ValueError, KeyError, TypeError):
        print(f"not a command, ignored: {payload[:200]!r}", file=sys.stderr)
        return None
    if name != "resend":
        return {"id": cid, "status": "error", "result": {"error": f"unknown command {name!r}"}}
    r = resend_range(params)
    if r is None:
        return {"id": cid, "status": "error", "result": {"error": "params want integers from <= to"}}
    # Only what is still kept, and only once: a reading not yet acked is already on its way.
    again = [s for s in range(max(r[0], seq - HISTORY + 1), min(r[1], seq) + 1) if s in history]
    for s in again:
        unacked.setdefault(s, history[s])
    # Older than the history (or not made yet): gone for good, and said so.
    unavailable = r[1] - r[0] + 1 - len(again)
    print(f"resend {r[0]}-{r[1]}: {len(again)} readings", flush=True)
    return {"id": cid, "status": "ok", "result": {"resent": len(again), "unavailable": unavailable}}


if __name__ == "__main__":
    main()
