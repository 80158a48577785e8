// A minimal touchpoint producer on franz-go, a maintained pure-Go Kafka client.
//
// It publishes touchpoint events (contract v1): one JSON object per record, UTF-8, on the
// topic of its channel (touchpoints.<channel>). The record key is a stable identifier of
// the customer (here the CRM id): the processor does not trust keys, but keying by the
// customer keeps one customer's events in order on one partition.
//
//	go run . -bootstrap localhost:9092 -prefix touchpoints. -customers 10
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Event is a touchpoint event, contract v1; optional parts are left out when empty.
type Event struct {
	EventID     string            `json:"event_id"`
	OccurredAt  string            `json:"occurred_at"` // RFC 3339 with offset (or epoch ms)
	Type        string            `json:"type"`
	Channel     string            `json:"channel,omitempty"`
	Identifiers map[string]string `json:"identifiers"`
	CaseID      string            `json:"case_id,omitempty"`
	Survey      *Survey           `json:"survey,omitempty"`
	Interaction *Interaction      `json:"interaction,omitempty"`
	Context     map[string]string `json:"context,omitempty"`
}

// Survey is an answer: nps 0..10, csat 1..scale_max, ces 1..7.
type Survey struct {
	Metric  string  `json:"metric"`
	Score   float64 `json:"score"`
	Comment string  `json:"comment,omitempty"`
}

// Interaction describes an assisted contact.
type Interaction struct {
	Direction   string  `json:"direction,omitempty"`
	WaitSeconds float64 `json:"wait_seconds,omitempty"`
	Resolved    *bool   `json:"resolved,omitempty"`
}

func newID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		log.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func main() {
	bootstrap := flag.String("bootstrap", "localhost:9092", "comma-separated Kafka brokers")
	prefix := flag.String("prefix", "touchpoints.", "topic prefix; the channel follows it")
	customers := flag.Int("customers", 10, "customers to publish touchpoints for")
	flag.Parse()

	client, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(*bootstrap, ",")...),
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotent by default: retries add no duplicates
		kgo.ProducerBatchCompression(kgo.ZstdCompression()),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	resolved := true
	start := time.Now().UTC().Add(-30 * time.Minute)
	var records []*kgo.Record
	for i := 0; i < *customers; i++ {
		crmID := fmt.Sprintf("CRM-%d", 20000+i)
		email := fmt.Sprintf("gopher%d@example.com", i)
		caseID := fmt.Sprintf("go-case-%d", i)
		at := start.Add(time.Duration(i) * time.Second)
		events := []struct {
			channel string
			event   Event
		}{
			{"web", Event{EventID: newID(), OccurredAt: at.Format(time.RFC3339Nano), Type: "page_view",
				Identifiers: map[string]string{"crm_id": crmID, "email": email}}},
			{"chat", Event{EventID: newID(), OccurredAt: at.Add(5 * time.Minute).Format(time.RFC3339Nano),
				Type: "chat", Channel: "chat", Identifiers: map[string]string{"crm_id": crmID}, CaseID: caseID,
				Interaction: &Interaction{Direction: "inbound", WaitSeconds: 40, Resolved: &resolved},
				Context:     map[string]string{"region": "apac"}}},
			{"survey", Event{EventID: newID(), OccurredAt: at.Add(15 * time.Minute).Format(time.RFC3339Nano),
				Type: "survey_response", Identifiers: map[string]string{"email": email, "crm_id": crmID},
				CaseID: caseID, Survey: &Survey{Metric: "ces", Score: float64(1 + i%7)}}},
		}
		for _, e := range events {
			value, err := json.Marshal(e.event)
			if err != nil {
				log.Fatal(err)
			}
			records = append(records, &kgo.Record{Topic: *prefix + e.channel, Key: []byte(crmID), Value: value})
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := client.ProduceSync(ctx, records...).FirstErr(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("published %d touchpoints to %s\n", len(records), *bootstrap)
}
