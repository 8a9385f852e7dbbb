// An iotcore device in Go with paho.mqtt.golang and JSON payloads, as the founders' firmware was written:
// readings over MQTT with QoS 1, each with a msgId and a sequence number. A reading stays in `unacked` until its
// PUBACK comes (the platform sends it once the reading is durably queued); after an outage the client
// reconnects and sends again what was not acknowledged. A reading that did arrive before the outage has the
// same msgId, so the platform stores it once.
//
// Build without a module download, against Debian's packages (golang-go,
// golang-github-eclipse-paho.mqtt.golang-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o iotcore-device .
//
// Run: ./iotcore-device -broker tcp://localhost:1883 -id $ID -token $TOKEN [-count 100] [-interval 1s]
// (or IOTCORE_MQTT_URL, IOTCORE_DEVICE_ID, IOTCORE_DEVICE_TOKEN in the environment).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"sort"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// Reading is the JSON the platform stores: ts and msgId, then the values.
type Reading struct {
	Ts    int64   `json:"ts"`
	MsgID string  `json:"msgId"`
	Seq   int     `json:"seq"`
	Lat   float64 `json:"lat"`
	Lon   float64 `json:"lon"`
	Speed float64 `json:"speed"`
	Fuel  float64 `json:"fuel"`
}

type ack struct {
	seq int
	err error
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	broker := flag.String("broker", env("IOTCORE_MQTT_URL", "tcp://localhost:1883"), "the platform's MQTT URL")
	id := flag.String("id", os.Getenv("IOTCORE_DEVICE_ID"), "device id (MQTT username)")
	token := flag.String("token", os.Getenv("IOTCORE_DEVICE_TOKEN"), "device token (MQTT password)")
	count := flag.Int("count", 0, "readings to send, then wait for their acks and exit (0: run forever)")
	interval := flag.Duration("interval", time.Second, "time between readings")
	flag.Parse()
	if *id == "" || *token == "" {
		fmt.Fprintln(os.Stderr, "usage: iotcore-device -id ID -token TOKEN [-broker tcp://host:1883] [-count N] [-interval 1s]")
		os.Exit(2)
	}

	opts := mqtt.NewClientOptions().
		AddBroker(*broker).
		SetClientID(*id).
		SetUsername(*id).
		SetPassword(*token).
		SetCleanSession(true).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(5 * time.Second).
		SetConnectTimeout(5 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) { log.Printf("connection lost: %v; reconnecting", err) }).
		SetOnConnectHandler(func(mqtt.Client) { log.Printf("connected to %s", *broker) })
	client := mqtt.NewClient(opts)
	// paho reconnects a connection it had; the first one is this loop's to retry (the platform may be starting).
	for {
		t := client.Connect()
		t.Wait()
		err := t.Error()
		if err == nil {
			break
		}
		if err == packets.ConnErrors[packets.ErrRefusedBadUsernameOrPassword] || err == packets.ConnErrors[packets.ErrRefusedNotAuthorised] {
			log.Fatalf("the platform refused the credentials: %v", err)
		}
		log.Printf("connect: %v; retrying", err)
		time.Sleep(time.Second)
	}

	topic := "devices/" + *id + "/telemetry"
	boot := time.Now().UnixNano() / int64(time.Millisecond)
	unacked := map[int][]byte{}
	inflight := map[int]bool{}
	acks := make(chan ack, 1024)
	publish := func(seq int) {
		if !client.IsConnected() || inflight[seq] {
			return
		}
		inflight[seq] = true
		t := client.Publish(topic, 1, false, unacked[seq])
		go func() {
			var err error
			if !t.WaitTimeout(10 * time.Second) {
				err = errors.New("no PUBACK within 10 s")
			} else {
				err = t.Error()
			}
			acks <- ack{seq, err}
		}()
	}

	tick := time.NewTicker(*interval)
	resend := time.NewTicker(time.Second)
	seq := 0
	for {
		select {
		case <-tick.C:
			if *count > 0 && seq >= *count {
				continue
			}
			seq++
			now := time.Now()
			r := Reading{
				Ts:    now.UnixNano() / int64(time.Millisecond),
				MsgID: fmt.Sprintf("%d-%d", boot, seq),
				Seq:   seq,
				Lat:   37.98 + float64(seq)*0.0001,
				Lon:   23.72,
				Speed: math.Round((40+20*math.Sin(float64(seq)/10))*10) / 10,
				Fuel:  math.Max(5, 80-float64(seq)*0.01),
			}
			payload, _ := json.Marshal(r)
			unacked[seq] = payload
			publish(seq)
		case a := <-acks:
			delete(inflight, a.seq)
			if a.err != nil {
				log.Printf("seq %d not acknowledged (%v): sent again once connected", a.seq, a.err)
				continue
			}
			delete(unacked, a.seq)
			fmt.Printf("acked seq=%d\n", a.seq)
			if *count > 0 && seq == *count && len(unacked) == 0 {
				fmt.Printf("done: %d readings acked\n", *count)
				client.Disconnect(250)
				return
			}
		case <-resend.C:
			// Oldest first, so the platform sees them in order when it can.
			pending := make([]int, 0, len(unacked))
			for s := range unacked {
				pending = append(pending, s)
			}
			sort.Ints(pending)
			for _, s := range pending {
				publish(s)
			}
		}
	}
}
