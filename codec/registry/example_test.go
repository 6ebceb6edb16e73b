package registry_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/codec"
	"github.com/dispytch/dispytch-go/codec/registry"
	"github.com/dispytch/dispytch-go/codec/registry/registrytest"
	"github.com/dispytch/dispytch-go/memory"
)

type Order struct {
	ID    string `avro:"id"`
	Cents int64  `avro:"cents"`
}

func (Order) Topic() string     { return "orders" }
func (Order) EventType() string { return "order_placed" }

// Avro events in the registry's wire format, in header mode, on the memory
// broker; registrytest stands in for the registry.
func Example() {
	srv := registrytest.New()
	defer srv.Close()
	reg, err := registry.New(registry.URLs(srv.URL))
	if err != nil {
		panic(err)
	}
	orders := registry.Avro(reg, registry.RegisterOnEmit(),
		registry.Schema[Order](`{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"cents","type":"long"}]}`))

	broker := memory.New()
	defer broker.Close(context.Background())
	listener := dispytch.NewListener(broker, dispytch.ConsumerGroup("billing"), dispytch.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
		dispytch.Codecs(orders), dispytch.Envelopes(codec.Headers))
	handled := make(chan Order)
	listener.Handle("orders", "order_placed", func(ev dispytch.Event[Order]) { handled <- ev.Body })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { _ = listener.Run(ctx) }()
	if err := listener.WaitReady(ctx); err != nil {
		panic(err)
	}

	emitter := dispytch.NewEmitter(broker, dispytch.WithCodec(orders), dispytch.Envelopes(codec.Headers))
	m, err := emitter.Message(Order{ID: "o-1", Cents: 1250})
	if err != nil {
		panic(err)
	}
	fmt.Printf("magic %d, schema id %d, %s\n", m.Value[0], binary.BigEndian.Uint32(m.Value[1:5]), m.ContentType)
	if err := emitter.Emit(ctx, Order{ID: "o-1", Cents: 1250}); err != nil {
		panic(err)
	}
	o := <-handled
	fmt.Println("handled", o.ID, o.Cents)
	// Output:
	// magic 0, schema id 1, application/vnd.confluent.avro
	// handled o-1 1250
}
