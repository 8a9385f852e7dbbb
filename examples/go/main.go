// An iotcore device in Go with paho.mqtt.golang and JSON payloads, as the founders' firmware was written:
// readings over MQTT with QoS 1, each with a msgId and a sequence number. A reading stays in `unacked` until its
// PUBACK comes (the platform sends it once the reading is durably queued); after an outage the client
// reconnects and sends again what was not acknowledged. A reading that did arrive before the outage has the
// same msgId, so the platform stores it once.
//
// It also keeps its last historySize readings by seq and answers the platform's `resend` command (on
// devices/<id>/commands, sent to a device created with the attribute "resend": true when its seq skips a
// range): it publishes again the readings of that range it still has, as they were (same msgId: stored once),
// and answers on devices/<id>/commands/ack. `-lose A-B` makes readings A..B but does not send them, as a link
// that lost them would, to see that happen.
//
// Build without a module download, against Debian's packages (golang-go,
// golang-github-eclipse-paho.mqtt.golang-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o iotcore-device .
//
// Run: ./iotcore-device -broker tcp://localhost:1883 -id $ID -token $TOKEN [-count 100] [-interval 1s] [-lose 5-8]
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

// historySize readings are kept for a resend, the newest: a few minutes at one a second, a few hundred KiB.
const historySize = 1000

// command is what the platform sends on devices/<id>/commands.
type command struct {
	ID     string          `json:"id"`
	Name   string          `json:"name"`
	Params json.RawMessage `json:"params"`
}

// answer goes to devices/<id>/commands/ack.
type answer struct {
	ID     string      `json:"id"`
	Status string      `json:"status"`
	Result interface{} `json:"result"`
}

// seqRange is -lose A-B.
type seqRange struct{ from, to int }

func (r *seqRange) String() string { return fmt.Sprintf("%d-%d", r.from, r.to) }

func (r *seqRange) Set(s string) error {
	if _, err := fmt.Sscanf(s, "%d-%d", &r.from, &r.to); err != nil || r.from < 1 || r.to < r.from {
		return fmt.Errorf("%q: want A-B with 1 <= A <= B", s)
	}
	return nil
}

func (r *seqRange) has(seq int) bool { return r.from <= seq && seq <= r.to }

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
	var lose seqRange
	flag.Var(&lose, "lose", "make readings A-B but do not send them (a lost range)")
	flag.Parse()
	if *id == "" || *token == "" {
		fmt.Fprintln(os.Stderr, "usage: iotcore-device -id ID -token TOKEN [-broker tcp://host:1883] [-count N] [-interval 1s] [-lose A-B]")
		os.Exit(2)
	}

	commandsTopic := "devices/" + *id + "/commands"
	// paho's router hands each message to the handler in turn; the main loop below runs them.
	commands := make(chan []byte, 64)
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
		SetOnConnectHandler(func(c mqtt.Client) {
			log.Printf("connected to %s", *broker)
			// A clean session forgets its subscriptions: subscribe at every connect.
			c.Subscribe(commandsTopic, 1, func(_ mqtt.Client, m mqtt.Message) { commands <- m.Payload() })
		})
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
	history := map[int][]byte{}
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
			history[seq] = payload
			delete(history, seq-historySize)
			if !lose.has(seq) {
				unacked[seq] = payload
				publish(seq)
			}
		case p := <-commands:
			a, ok := run(p, seq, history, unacked, publish)
			if ok {
				// After the readings a resend put back, so the platform has them when it reads the answer.
				b, _ := json.Marshal(a)
				client.Publish(commandsTopic+"/ack", 1, false, b)
			}
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

// run runs a command from the platform and returns the answer for devices/<id>/commands/ack (false: none).
func run(payload []byte, seq int, history, unacked map[int][]byte, publish func(int)) (answer, bool) {
	var c command
	if err := json.Unmarshal(payload, &c); err != nil || c.ID == "" {
		log.Printf("not a command, ignored: %.200q", payload)
		return answer{}, false
	}
	if c.Name != "resend" {
		return answer{c.ID, "error", map[string]string{"error": fmt.Sprintf("unknown command %q", c.Name)}}, true
	}
	var r struct {
		From *int `json:"from"`
		To   *int `json:"to"`
	}
	if err := json.Unmarshal(c.Params, &r); err != nil || r.From == nil || r.To == nil || *r.From > *r.To {
		return answer{c.ID, "error", map[string]string{"error": "params want integers from <= to"}}, true
	}
	// Only what is still kept, and only once: a reading not yet acked is already on its way.
	from, to := *r.From, *r.To
	resent := 0
	for s := max(from, seq-historySize+1); s <= min(to, seq); s++ {
		if p, ok := history[s]; ok {
			if _, waiting := unacked[s]; !waiting {
				unacked[s] = p
				publish(s)
			}
			resent++
		}
	}
	fmt.Printf("resend %d-%d: %d readings\n", from, to, resent)
	// Older than the history (or not made yet): gone for good, and said so.
	return answer{c.ID, "ok", map[string]int{"resent": resent, "unavailable": to - from + 1 - resent}}, true
}

func max(a, b int) int {
	if a > b {
		return a
	}
	return b
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}
