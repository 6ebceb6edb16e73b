package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/kafka"
)

type kafkaBroker struct {
	seeds   []string
	kgoOpts []kgo.Opt // connection: seeds, TLS, SASL
	cons    *kafka.Consumer
	prod    *kafka.Producer
}

func openKafka(ctx context.Context, u *url.URL, b *brokerConfig) (broker, error) {
	seeds := strings.Split(u.Host, ",")
	for i, s := range seeds {
		if !strings.Contains(s, ":") {
			seeds[i] = s + ":9092"
		}
	}
	user, password := b.user, b.password
	if u.User != nil {
		if user == "" {
			user = u.User.Username()
		}
		if p, ok := u.User.Password(); ok && password == "" {
			password = p
		}
	}
	opts := []kafka.Option{kafka.Brokers(seeds...), kafka.ClientID("dispytch-cli")}
	kopts := []kgo.Opt{kgo.SeedBrokers(seeds...), kgo.ClientID("dispytch-cli")}
	tlsCfg, err := b.tlsConfig(u.Scheme)
	if err != nil {
		return nil, err
	}
	if tlsCfg != nil {
		opts = append(opts, kafka.TLS(tlsCfg))
		kopts = append(kopts, kgo.DialTLSConfig(tlsCfg))
	}
	if user != "" {
		switch strings.ToLower(b.sasl) {
		case "", "plain":
			opts = append(opts, kafka.SASLPlain(user, password))
			kopts = append(kopts, kgo.SASL(plain.Auth{User: user, Pass: password}.AsMechanism()))
		case "scram-sha-256":
			opts = append(opts, kafka.SASLScramSHA256(user, password))
			kopts = append(kopts, kgo.SASL(scram.Auth{User: user, Pass: password}.AsSha256Mechanism()))
		case "scram-sha-512":
			opts = append(opts, kafka.SASLScramSHA512(user, password))
			kopts = append(kopts, kgo.SASL(scram.Auth{User: user, Pass: password}.AsSha512Mechanism()))
		default:
			return nil, usagef("--sasl %q: plain, scram-sha-256 or scram-sha-512", b.sasl)
		}
	} else if b.sasl != "" {
		return nil, usagef("--sasl needs --user")
	}
	popts := make([]kafka.ProducerOption, len(opts))
	copts := make([]kafka.ConsumerOption, len(opts))
	for i, o := range opts {
		popts[i], copts[i] = o, o
	}
	p, err := kafka.NewProducer(popts...)
	if err != nil {
		return nil, err
	}
	c, err := kafka.NewConsumer(append(copts, kafka.DeadLetterWith(p))...)
	if err != nil {
		closeKafkaProducer(p)
		return nil, err
	}
	// Reach the cluster now, so that a wrong address or refused
	// credentials fail here with the broker's reason.
	if err := p.Client().Ping(ctx); err != nil {
		c.Close(context.Background())
		closeKafkaProducer(p)
		return nil, err
	}
	return &kafkaBroker{seeds: seeds, kgoOpts: kopts, cons: c, prod: p}, nil
}

func closeKafkaProducer(p *kafka.Producer) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.Close(ctx)
}

func (k *kafkaBroker) producer() backend.Producer     { return k.prod }
func (k *kafkaBroker) store() backend.DeadLetterStore { return k.cons }

func (k *kafkaBroker) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = k.cons.Close(ctx)
	_ = k.prod.Close(ctx)
}

// tail reads the partitions of the matching topics directly, from their
// end (or start) offsets at the time it starts: no consumer group, so
// nothing is committed and no service's group sees a new member. Topics
// created later that match are picked up from their start.
func (k *kafkaBroker) tail(ctx context.Context, sub *tailSub, deliver func(*backend.Delivery) error, ready func(string)) error {
	cl, err := kgo.NewClient(append(append([]kgo.Opt(nil), k.kgoOpts...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{}),
		kgo.FetchMaxWait(200*time.Millisecond))...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	known := map[string]bool{}
	add := func(ctx context.Context, fromStart bool) ([]string, error) {
		topics, err := adm.ListTopics(ctx)
		if err != nil {
			return nil, err
		}
		var fresh []string
		for name, td := range topics {
			if known[name] || td.IsInternal || !sub.matches(name) {
				continue
			}
			fresh = append(fresh, name)
		}
		if len(fresh) == 0 {
			return nil, nil
		}
		sort.Strings(fresh)
		var offs kadm.ListedOffsets
		if fromStart {
			offs, err = adm.ListStartOffsets(ctx, fresh...)
		} else {
			offs, err = adm.ListEndOffsets(ctx, fresh...)
		}
		if err != nil {
			return nil, err
		}
		m := map[string]map[int32]kgo.Offset{}
		var failed error
		offs.Each(func(o kadm.ListedOffset) {
			if o.Err != nil {
				failed = fmt.Errorf("topic %s partition %d: %w", o.Topic, o.Partition, o.Err)
				return
			}
			if m[o.Topic] == nil {
				m[o.Topic] = map[int32]kgo.Offset{}
			}
			m[o.Topic][o.Partition] = kgo.NewOffset().At(o.Offset)
		})
		if failed != nil {
			return nil, failed
		}
		for _, t := range fresh {
			known[t] = true
		}
		cl.AddConsumePartitions(m)
		return fresh, nil
	}
	first, err := add(ctx, sub.fromBeginning)
	if err != nil {
		return err
	}
	from := "their end"
	if sub.fromBeginning {
		from = "their start"
	}
	ready(fmt.Sprintf("kafka topics %v from %s, and matching topics created later", first, from))
	refresh := time.NewTicker(2 * time.Second)
	defer refresh.Stop()
	for {
		pollCtx, cancel := context.WithTimeout(ctx, time.Second)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		var fetchErr error
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				fetchErr = fmt.Errorf("fetch %s[%d]: %w", t, p, err)
			}
		})
		if fetchErr != nil {
			return fetchErr
		}
		var derr error
		fetches.EachRecord(func(r *kgo.Record) {
			if derr != nil || !sub.matches(r.Topic) {
				return
			}
			h := make(map[string]string, len(r.Headers))
			ct := ""
			for _, rh := range r.Headers {
				h[rh.Key] = string(rh.Value)
				if rh.Key == backend.HeaderContentType {
					ct = string(rh.Value)
				}
			}
			derr = deliver(&backend.Delivery{Topic: r.Topic, Key: r.Key, Value: r.Value, Headers: h, ContentType: ct,
				Info: backend.DeliveryInfo{Partition: r.Partition, Offset: r.Offset, Key: r.Key, Raw: r}})
		})
		if derr != nil {
			if errors.Is(derr, errEnough) {
				return nil
			}
			return derr
		}
		select {
		case <-refresh.C:
			if _, err := add(ctx, true); err != nil && ctx.Err() == nil {
				return err
			}
		default:
		}
	}
}

// errEnough, from a tail's deliver function, ends the tail without an
// error (--count was reached).
var errEnough = errors.New("enough")
