// Command schemas emits and handles Avro events in the Confluent Schema
// Registry's wire format, on the embedded memory broker, with an in-process
// registry (codec/registry/registrytest; point registry.URLs at your own
// registry instead). It shows schema-on-write (an event its schema refuses
// is not sent), header mode (id, type and timestamp in headers, the value
// the framed body alone), a schema evolution the registry accepts and one
// it refuses, and then exits.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/registry"
	"github.com/dispytch/dispytch-go/codec/registry/registrytest"
	"github.com/dispytch/dispytch-go/memory"
)

// OrderPlaced is the event; its Avro schema is orderV1.
type OrderPlaced struct {
	ID       string `avro:"id"`
	Customer string `avro:"customer"`
	Cents    int64  `avro:"cents"`
	Currency string `avro:"currency"`
}

// Topic is where orders go.
func (OrderPlaced) Topic() string { return "orders" }

// EventType names the event.
func (OrderPlaced) EventType() string { return "order_placed" }

const orderV1 = `{"type": "record", "name": "OrderPlaced", "namespace": "shop", "fields": [
  {"name": "id", "type": "string"},
  {"name": "customer", "type": "string"},
  {"name": "cents", "type": "long"},
  {"name": "currency", "type": {"type": "enum", "name": "Currency", "symbols": ["EUR", "USD"]}}
]}`

// orderV2 adds a field with a default: the registry accepts it (BACKWARD).
const orderV2 = `{"type": "record", "name": "OrderPlaced", "namespace": "shop", "fields": [
  {"name": "id", "type": "string"},
  {"name": "customer", "type": "string"},
  {"name": "cents", "type": "long"},
  {"name": "currency", "type": {"type": "enum", "name": "Currency", "symbols": ["EUR", "USD"]}},
  {"name": "coupon", "type": "string", "default": ""}
]}`

// orderBad turns cents into a string: the registry refuses it.
const orderBad = `{"type": "record", "name": "OrderPlaced", "namespace": "shop", "fields": [
  {"name": "id", "type": "string"}, {"name": "customer", "type": "string"}, {"name": "cents", "type": "string"}
]}`

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "schemas:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	srv := registrytest.New() // a real one: registry.URLs("https://…"), registry.BasicAuth(key, secret)
	defer srv.Close()
	reg, err := registry.New(registry.URLs(srv.URL))
	if err != nil {
		return err
	}
	// One serde: the emitter registers OrderPlaced's schema at its first
	// event; the listener decodes by the id each message names.
	orders := registry.Avro(reg, registry.Schema[OrderPlaced](orderV1), registry.RegisterOnEmit())

	broker := memory.New()
	defer broker.Close(context.Background())
	emitter := dispytch.NewEmitter(broker, dispytch.WithCodec(orders), dispytch.Envelopes(codec.Headers))
	listener := dispytch.NewListener(broker, dispytch.ConsumerGroup("billing"), dispytch.WithLogger(log),
		dispytch.Codecs(orders), dispytch.Envelopes(codec.Headers))
	handled := make(chan OrderPlaced, 4)
	listener.Handle("orders", "order_placed", func(ev dispytch.Event[OrderPlaced]) {
		fmt.Printf("handled %s: %s pays %d %s\n", ev.ID, ev.Body.Customer, ev.Body.Cents, ev.Body.Currency)
		handled <- ev.Body
	})
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- listener.Run(runCtx) }()
	if err := listener.WaitReady(ctx); err != nil {
		return err
	}

	// What goes on the wire: the framed body, and the event in headers.
	m, err := emitter.Message(OrderPlaced{ID: "o-1", Customer: "ann", Cents: 1250, Currency: "EUR"})
	if err != nil {
		return err
	}
	fmt.Printf("value: magic %d, schema id %d, %d bytes of Avro; content type %s; headers %s=%s %s=%s\n",
		m.Value[0], binary.BigEndian.Uint32(m.Value[1:5]), len(m.Value)-5, m.ContentType,
		codec.HeaderEventType, m.Headers[codec.HeaderEventType], codec.HeaderTimestamp, m.Headers[codec.HeaderTimestamp])

	for i, o := range []OrderPlaced{
		{ID: "o-1", Customer: "ann", Cents: 1250, Currency: "EUR"},
		{ID: "o-2", Customer: "bob", Cents: 990, Currency: "USD"},
	} {
		if err := emitter.Emit(ctx, o); err != nil {
			return fmt.Errorf("order %d: %w", i, err)
		}
		<-handled
	}

	// Schema-on-write: a currency the enum does not have is refused before
	// anything is sent.
	err = emitter.Emit(ctx, OrderPlaced{ID: "o-3", Customer: "cy", Cents: 5, Currency: "GBP"})
	var se *codec.SchemaError
	if !errors.As(err, &se) || !errors.Is(err, dispytch.ErrNotSent) {
		return fmt.Errorf("a GBP order was not refused: %v", err)
	}
	fmt.Printf("refused, not sent: %v\n", se)

	// Evolution: the registry takes a compatible next version, and refuses
	// an incompatible one with its reason.
	id2, err := srv.Register("orders-value", "AVRO", orderV2)
	if err != nil {
		return err
	}
	fmt.Printf("registered version 2 (id %d): a field with a default is BACKWARD compatible\n", id2)
	if _, err := srv.Register("orders-value", "AVRO", orderBad); err != nil {
		fmt.Printf("refused by the registry: %v\n", err)
	} else {
		return errors.New("the registry took an incompatible schema")
	}

	stop()
	if err := <-errc; err != nil {
		return err
	}
	st := listener.Stats()
	fmt.Printf("done: %d handled, %d dead-lettered\n", st.Handled, st.DeadLettered)
	return nil
}
