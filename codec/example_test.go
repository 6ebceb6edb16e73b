package codec_test

import (
	"fmt"
	"slices"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/memory"
)

type OrderPlaced struct {
	ID string `json:"id"`
}

func (OrderPlaced) Topic() string     { return "orders" }
func (OrderPlaced) EventType() string { return "order_placed" }

// A CloudEvent in binary mode: the attributes are headers (ce_ on Kafka and
// the memory broker, cloudEvents_ on RabbitMQ), the value is the body.
func ExampleCloudEvents() {
	e := dispytch.NewEmitter(memory.New(), dispytch.Envelopes(codec.CloudEvents(codec.CloudEventsBinary, "urn:shop:orders")))
	m, err := e.Message(OrderPlaced{ID: "o-1"}, dispytch.EventID("evt-1"))
	if err != nil {
		panic(err)
	}
	var keys []string
	for k := range m.Headers {
		if k != "ce_time" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Printf("%s: %s\n", k, m.Headers[k])
	}
	fmt.Printf("content type %s, value %s\n", m.ContentType, m.Value)
	// Output:
	// ce_id: evt-1
	// ce_source: urn:shop:orders
	// ce_specversion: 1.0
	// ce_type: order_placed
	// content type application/json, value {"id":"o-1"}
}
