package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/rabbitmq"
)

type amqpBroker struct {
	url      string
	config   amqp.Config
	exchange string
	client   *rabbitmq.Client
}

func openAMQP(ctx context.Context, u *url.URL, b *brokerConfig) (broker, error) {
	c := *u
	if b.user != "" {
		pass := b.password
		if pass == "" && u.User != nil {
			pass, _ = u.User.Password()
		}
		c.User = url.UserPassword(b.user, pass)
	} else if b.password != "" {
		name := "guest"
		if u.User != nil {
			name = u.User.Username()
		}
		c.User = url.UserPassword(name, b.password)
	}
	tlsCfg, err := b.tlsConfig(u.Scheme)
	if err != nil {
		return nil, err
	}
	if tlsCfg != nil && c.Scheme == "amqp" {
		c.Scheme = "amqps"
	}
	cfg := amqp.Config{Heartbeat: 10 * time.Second, Locale: "en_US", TLSClientConfig: tlsCfg, Properties: amqp.NewConnectionProperties()}
	raw := c.String()
	// The tool declares nothing: the exchange and the queues are the
	// services' (a missing one is an error naming it).
	client, err := rabbitmq.Dial(ctx, raw, rabbitmq.Exchanges(b.exchange), rabbitmq.DeclareTopology(false),
		rabbitmq.WithConfig(cfg), rabbitmq.ConnectionName("dispytch-cli"))
	if err != nil {
		return nil, err
	}
	return &amqpBroker{url: raw, config: cfg, exchange: b.exchange, client: client}, nil
}

func (a *amqpBroker) producer() backend.Producer     { return a.client }
func (a *amqpBroker) store() backend.DeadLetterStore { return a.client }
func (a *amqpBroker) close()                         { _ = a.client.Close(context.Background()) }

// tail binds a temporary, exclusive, server-named queue of its own to the
// exchange with the patterns' binding keys ({x} → *, {x...} → #): the
// services' queues and their messages are left alone, and the queue goes
// away with the connection.
func (a *amqpBroker) tail(ctx context.Context, sub *tailSub, deliver func(*backend.Delivery) error, ready func(string)) error {
	cfg := a.config
	cfg.Properties = amqp.NewConnectionProperties()
	cfg.Properties.SetClientConnectionName("dispytch-cli/tail")
	conn, err := amqp.DialConfig(a.url, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.ExchangeDeclarePassive(a.exchange, "topic", true, false, false, false, nil); err != nil {
		return fmt.Errorf("exchange %q: %w (name the services' exchange with --exchange)", a.exchange, err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, amqp.Table{"x-queue-type": "classic"})
	if err != nil {
		return err
	}
	var keys []string
	for _, p := range sub.patterns {
		key := p.Format("*", "#")
		if p.Delimiter() != "." {
			return fmt.Errorf("pattern %q: AMQP topic exchanges split routing keys at '.', not %q", p, p.Delimiter())
		}
		if err := ch.QueueBind(q.Name, key, a.exchange, false, nil); err != nil {
			return fmt.Errorf("bind %q to exchange %q: %w", key, a.exchange, err)
		}
		keys = append(keys, key)
	}
	if err := ch.Qos(256, 0, false); err != nil {
		return err
	}
	// Acked on delivery: the queue is the tail's own.
	msgs, err := ch.ConsumeWithContext(ctx, q.Name, "dispytch-cli-tail", true, true, false, false, nil)
	if err != nil {
		return err
	}
	ready(fmt.Sprintf("exchange %q with the keys %s, on the temporary queue %s", a.exchange, strings.Join(keys, ", "), q.Name))
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	for {
		select {
		case <-ctx.Done():
			return nil
		case e := <-closed:
			if e == nil {
				return errors.New("the connection closed")
			}
			return fmt.Errorf("the connection closed: %w", e)
		case d, ok := <-msgs:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("the broker cancelled the tail's consumer")
			}
			if !sub.matches(d.RoutingKey) {
				continue
			}
			h := map[string]string{}
			var key []byte
			for k, v := range d.Headers {
				s, ok := headerText(v)
				if !ok {
					continue
				}
				if k == rabbitmq.HeaderKey {
					key = []byte(s)
					continue
				}
				h[k] = s
			}
			err := deliver(&backend.Delivery{Topic: d.RoutingKey, Key: key, Value: d.Body, Headers: h, ContentType: d.ContentType,
				Info: backend.DeliveryInfo{Partition: -1, Offset: -1, Key: key, Redelivered: d.Redelivered, Raw: d}})
			if errors.Is(err, errEnough) {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
}

// headerText formats an AMQP header value as text, as the rabbitmq
// package does for listeners.
func headerText(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	case bool, int, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float32, float64:
		return fmt.Sprint(v), true
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano), true
	case amqp.Decimal:
		return fmt.Sprint(v.Value), true
	}
	return "", false
}
