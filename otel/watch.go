package otel

import (
	"context"
	"errors"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
)

// Healther is a listener or an emitter: what Watch observes.
type Healther interface {
	Health() dispytch.Health
}

var states = []dispytch.HealthState{dispytch.HealthConnecting, dispytch.HealthReady, dispytch.HealthReconnecting, dispytch.HealthStopped}

// Watch adds gauges of a listener's or an emitter's health, read at every
// collection, labelled dispytch.component=name and
// dispytch.component.kind ("listener" or "emitter"):
// dispytch.connection.state (1 for the current dispytch.state, 0 for the
// others), dispytch.connection.reconnects and, for listeners,
// dispytch.listener.stalled (seconds messages have waited with none
// settled). Unregister the returned registration when h is gone.
func (i *Instrumentation) Watch(name string, h Healther) (metric.Registration, error) {
	if h == nil {
		return nil, errors.New("dispytch otel: Watch: nil listener or emitter")
	}
	kind := "emitter"
	if _, ok := h.(*dispytch.Listener); ok {
		kind = "listener"
	}
	base := []attribute.KeyValue{KeyComponent.String(name), KeyKind.String(kind)}
	stateSets := make([]attribute.Set, len(states))
	for j, s := range states {
		stateSets[j] = attribute.NewSet(append(base[:2:2], KeyState.String(s.String()))...)
	}
	baseSet := attribute.NewSet(base...)
	state, err := i.meter.Int64ObservableGauge("dispytch.connection.state",
		metric.WithDescription("1 for the current health state of a listener or an emitter (dispytch.state), 0 for the others."))
	if err != nil {
		return nil, err
	}
	reconnects, err := i.meter.Int64ObservableCounter("dispytch.connection.reconnects", metric.WithUnit("{reconnect}"),
		metric.WithDescription("Connections or subscriptions re-established after a loss."))
	if err != nil {
		return nil, err
	}
	obs := []metric.Observable{state, reconnects}
	var stalled metric.Float64ObservableGauge
	if kind == "listener" {
		stalled, err = i.meter.Float64ObservableGauge("dispytch.listener.stalled", metric.WithUnit("s"),
			metric.WithDescription("How long messages have waited in a listener with none settled; 0 while it makes progress."))
		if err != nil {
			return nil, err
		}
		obs = append(obs, stalled)
	}
	return i.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		hs := h.Health()
		for j, s := range states {
			v := int64(0)
			if s == hs.State {
				v = 1
			}
			o.ObserveInt64(state, v, metric.WithAttributeSet(stateSets[j]))
		}
		o.ObserveInt64(reconnects, hs.Reconnects, metric.WithAttributeSet(baseSet))
		if stalled != nil {
			o.ObserveFloat64(stalled, hs.Stalled.Seconds(), metric.WithAttributeSet(baseSet))
		}
		return nil
	}, obs...)
}

// lagTimeout bounds one lag query at a collection.
const lagTimeout = 5 * time.Second

// WatchLag adds the gauge dispytch.consumer.lag: for each partition a
// consumer's running subscriptions own (the Kafka consumer is a
// backend.LagReporter), the records written and not yet committed,
// labelled with the group, the topic and the partition. Each collection
// asks the brokers (bounded by 5s); a failed query reports nothing for
// that collection.
func (i *Instrumentation) WatchLag(r backend.LagReporter) (metric.Registration, error) {
	if r == nil {
		return nil, errors.New("dispytch otel: WatchLag: nil reporter")
	}
	lag, err := i.meter.Int64ObservableGauge("dispytch.consumer.lag", metric.WithUnit("{message}"),
		metric.WithDescription("Records written to a partition and not yet committed by the consumer group."))
	if err != nil {
		return nil, err
	}
	system := semconv.MessagingSystemKafka
	if n, ok := r.(backend.Named); ok {
		system = semconv.MessagingSystemKey.String(n.Backend())
	}
	return i.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, lagTimeout)
		defer cancel()
		lags, err := r.Lag(ctx)
		for _, pl := range lags {
			o.ObserveInt64(lag, pl.Lag, metric.WithAttributes(
				system,
				semconv.MessagingConsumerGroupName(pl.Group),
				semconv.MessagingDestinationName(pl.Topic),
				semconv.MessagingDestinationPartitionID(strconv.Itoa(int(pl.Partition))),
			))
		}
		return err
	}, lag)
}
