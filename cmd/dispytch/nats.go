package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/nats"
)

type natsBroker struct {
	client *nats.Client
}

// openNATS connects to nats:// or tls:// URLs. The tool declares nothing:
// an emit to a subject no stream holds fails, naming it.
func openNATS(ctx context.Context, u *url.URL, b *brokerConfig) (broker, error) {
	opts := []nats.Option{nats.Name("dispytch-cli"), nats.DeclareTopology(false),
		nats.ConnOptions(natsgo.Timeout(min(b.timeout, 10*time.Second)), natsgo.RetryOnFailedConnect(false))}
	c := *u
	user, pass := b.user, b.password
	if c.User != nil {
		if user == "" {
			user = c.User.Username()
		}
		if p, ok := c.User.Password(); ok && pass == "" {
			pass = p
		}
		c.User = nil
	}
	switch {
	case user != "" && pass == "":
		opts = append(opts, nats.Token(user)) // nats://token@host
	case user != "":
		opts = append(opts, nats.UserInfo(user, pass))
	}
	scheme := "" // tlsConfig takes a scheme ending in "s" for TLS: nats:// is not
	if u.Scheme == "tls" {
		scheme = "tls"
	}
	tlsCfg, err := b.tlsConfig(scheme)
	if err != nil {
		return nil, err
	}
	if tlsCfg != nil {
		opts = append(opts, nats.TLS(tlsCfg))
	}
	hosts := strings.Split(c.Host, ",")
	urls := make([]string, len(hosts))
	for i, h := range hosts {
		urls[i] = c.Scheme + "://" + h
	}
	client, err := nats.New(strings.Join(urls, ","), opts...)
	if err != nil {
		return nil, err
	}
	// Fail now with the cause when the server cannot be reached.
	if err := client.Conn().FlushWithContext(ctx); err != nil {
		_ = client.Close(context.Background())
		if last := client.Conn().LastError(); last != nil {
			err = fmt.Errorf("%w: %w", err, last)
		}
		return nil, err
	}
	return &natsBroker{client: client}, nil
}

func (n *natsBroker) producer() backend.Producer     { return n.client }
func (n *natsBroker) store() backend.DeadLetterStore { return n.client }
func (n *natsBroker) close()                         { _ = n.client.Close(context.Background()) }

// tail reads the stream holding the patterns' subjects ({x} → *, {x...} →
// >) with an ordered consumer of its own: ephemeral, without acks, so the
// services' durable consumers and their messages are left alone.
func (n *natsBroker) tail(ctx context.Context, sub *tailSub, deliver func(*backend.Delivery) error, ready func(string)) error {
	js := n.client.JetStream()
	var subjects []string
	stream := ""
	for _, p := range sub.patterns {
		if p.Delimiter() != "." && !p.IsLiteral() {
			return fmt.Errorf("pattern %q: NATS subjects split at '.', not %q", p, p.Delimiter())
		}
		s := p.Format("*", ">")
		name, err := js.StreamNameBySubject(ctx, s)
		if err != nil {
			return fmt.Errorf("no stream holds subject %q: %w", s, err)
		}
		if stream != "" && name != stream {
			return fmt.Errorf("subjects %q and %q are in streams %s and %s: tail one stream at a time", subjects[0], s, stream, name)
		}
		stream = name
		subjects = append(subjects, s)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverNewPolicy}
	if sub.fromBeginning {
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	}
	if len(subjects) > 1 && !serverAtLeast(n.client.Conn().ConnectedServerVersion(), 2, 10) {
		cfg.FilterSubjects = nil // one filter subject before 2.10: the stream's whole, matched here
	}
	oc, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	it, err := oc.Messages()
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	defer it.Stop()
	ready(fmt.Sprintf("stream %s, subjects %s, with an ordered consumer of its own", stream, strings.Join(subjects, ", ")))
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if !sub.matches(msg.Subject()) {
			continue
		}
		h := map[string]string{}
		var key []byte
		ct := ""
		for k, vs := range msg.Headers() {
			switch {
			case len(vs) == 0, strings.HasPrefix(k, "Nats-"), k == nats.HeaderEventID, k == nats.HeaderEventType:
			case k == nats.HeaderKey:
				key = []byte(vs[0])
			case k == backend.HeaderContentType:
				ct = vs[0]
			default:
				h[k] = vs[0]
			}
		}
		d := &backend.Delivery{Topic: msg.Subject(), Key: key, Value: msg.Data(), Headers: h, ContentType: ct,
			Info: backend.DeliveryInfo{Partition: -1, Offset: -1, Key: key, Raw: msg}}
		if md, err := msg.Metadata(); err == nil {
			d.Info.DeliveryCount = int(md.NumDelivered)
		}
		err = deliver(d)
		if errors.Is(err, errEnough) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func serverAtLeast(v string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(strings.TrimPrefix(v, "v"), "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma > major || ma == major && mi >= minor
}
