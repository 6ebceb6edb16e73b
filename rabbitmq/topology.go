package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/topic"
)

// plan is the topology one Consume call needs, computed from its
// subscription and the client's options.
type plan struct {
	group string
	// prefetch is the basic.qos of the consume channel.
	prefetch int
	// queues are consumed; one, except when reading dead-letter queues.
	queues []string
	// serverNamed: a listener without a group gets an exclusive,
	// server-named queue (queues[0] is "" until declared).
	serverNamed bool
	// declareQueue: declare queues[0] with args and bind it.
	declareQueue bool
	// existing: the user's queue; only checked.
	existing bool
	args     amqp.Table
	bindings []binding
	// dlQueue is the group's dead-letter queue, dlDeclare whether to
	// declare it.
	dlQueue   string
	dlDeclare bool
	// dlRead: queues are dead-letter queues read by name (Redrive).
	dlRead bool
	tiers  []tier
	quorum bool
	// orderingKey is set on every delivery (single active consumer).
	orderingKey string
}

// binding binds the group's queue to exchange with key; pattern is the
// subscription's pattern it came from ("" for a literal topic).
type binding struct{ exchange, key, pattern string }

type tier struct {
	name  string
	delay time.Duration
}

// deadLetterQueue names the dead-letter queue (and topic) of group.
func (c *Client) deadLetterQueue(group string) string {
	if group == "" {
		group = "dispytch"
	}
	return group + c.cfg.dlSuffix
}

// tierName names the retry tier of queue for delay.
func tierName(queue string, delay time.Duration) string {
	return queue + ".retry." + delay.String()
}

func (c *Client) plan(sub backend.Subscription) (*plan, error) {
	cfg := &c.cfg
	p := &plan{group: sub.Group, quorum: cfg.queueType == Quorum, prefetch: cfg.prefetch}
	if p.prefetch == 0 {
		// Follow the listener: twice its concurrency keeps a delivery
		// queued for every worker that frees up.
		p.prefetch = DefaultPrefetch
		if sub.Concurrency > 0 {
			p.prefetch = 2 * sub.Concurrency
		}
	}
	if len(sub.Topics) == 0 && len(sub.Patterns) == 0 {
		return nil, errors.New("rabbitmq: consume: empty subscription")
	}
	// A subscription of dead-letter topics only reads those queues.
	if len(sub.Patterns) == 0 {
		all := true
		for _, t := range sub.Topics {
			all = all && strings.HasSuffix(t, cfg.dlSuffix) && len(t) > len(cfg.dlSuffix)
		}
		if all {
			p.dlRead = true
			p.queues = append(p.queues, sub.Topics...)
			p.dlDeclare = cfg.declare
			return p, nil
		}
	}
	if sub.Delimiter != "." && len(sub.Patterns) > 0 {
		return nil, fmt.Errorf("rabbitmq: consume: topic patterns need the delimiter \".\" of AMQP topic exchanges, the listener uses %q", sub.Delimiter)
	}
	p.dlQueue = c.deadLetterQueue(sub.Group)
	p.dlDeclare = cfg.declare
	if q, ok := cfg.existing[sub.Group]; ok && sub.Group != "" {
		p.queues = []string{q}
		p.existing = true
	} else {
		switch {
		case sub.Group == "":
			p.serverNamed = true
			p.quorum = false
			p.queues = []string{""}
		default:
			p.queues = []string{sub.Group}
		}
		if !cfg.declare {
			p.existing = !p.serverNamed
		}
		p.declareQueue = cfg.declare || p.serverNamed
	}
	if p.declareQueue {
		args := amqp.Table{
			"x-dead-letter-exchange":    c.dlx,
			"x-dead-letter-routing-key": p.dlQueue,
		}
		if !p.serverNamed {
			args["x-queue-type"] = string(cfg.queueType)
			if p.quorum && cfg.deliveryLimit > 0 {
				args["x-delivery-limit"] = int64(cfg.deliveryLimit)
			}
		}
		if cfg.sac {
			args["x-single-active-consumer"] = true
		}
		for k, v := range cfg.queueArgs {
			args[k] = v
		}
		p.args = args
		for _, x := range cfg.exchanges {
			for _, t := range sub.Topics {
				p.bindings = append(p.bindings, binding{x, t, ""})
			}
			for _, pat := range sub.Patterns {
				if pat == nil {
					return nil, errors.New("rabbitmq: consume: nil pattern in the subscription")
				}
				p.bindings = append(p.bindings, binding{x, pat.Format("*", "#"), pat.String()})
			}
		}
	}
	if cfg.declare && !p.serverNamed {
		for _, d := range cfg.tiers {
			if d > 0 {
				p.tiers = append(p.tiers, tier{name: tierName(p.queues[0], d), delay: d})
			}
		}
	}
	if cfg.sac {
		p.orderingKey = "sac"
	}
	return p, nil
}

// Exchanges: what the client finds on the broker.
//
// AMQP has no "describe exchange", and a passive declare succeeds whatever
// the type. So the client declares each exchange as it wants it (a
// durable topic exchange; the dead-letter exchange direct) on a channel of
// its own. When that succeeds, the exchange is as wanted (or was just
// created). When the exchange exists with other settings, the broker
// answers 406 PRECONDITION_FAILED naming the first argument that differs
// and its current value ("inequivalent arg 'type' ...: received 'topic'
// but current is 'direct'"); the type is checked first, so a mismatch in
// any other argument (durable, auto-delete, arguments) means the type is
// the one asked for. Either way the client then uses the exchange as it is,
// as long as its type can carry what the client needs: a topic exchange
// carries everything, a direct exchange (Python Dispytch's documented
// default) literal topics only; fanout, headers and plugin types cannot
// route by topic and fail with ErrPreconditionFailed. The failed declare
// closed its channel, which is why it runs on one of its own.

// exchangeProbe hands out a channel for declarations that may fail: after
// a failure it opens a fresh one.
type exchangeProbe struct {
	conn *amqp.Connection
	ch   *amqp.Channel
}

func (pr *exchangeProbe) channel() (*amqp.Channel, error) {
	if pr.ch == nil {
		ch, err := pr.conn.Channel()
		if err != nil {
			return nil, err
		}
		pr.ch = ch
	}
	return pr.ch, nil
}

// failed forgets the channel a failed declaration closed.
func (pr *exchangeProbe) failed() { pr.ch = nil }

func (pr *exchangeProbe) close() {
	if pr.ch != nil {
		_ = pr.ch.Close()
		pr.ch = nil
	}
}

// ensureExchanges declares the client's exchanges, and with dlx the
// dead-letter exchange, or takes them as they are (see above). It does
// nothing with DeclareTopology(false).
func (c *Client) ensureExchanges(conn *amqp.Connection, dlx bool) error {
	if !c.cfg.declare {
		return nil
	}
	pr := &exchangeProbe{conn: conn}
	defer pr.close()
	for _, x := range c.cfg.exchanges {
		if err := c.ensureExchange(pr, x, amqp.ExchangeTopic,
			"the client routes by topic: it needs a topic exchange, or a direct one for literal topics only; use another exchange name, or delete this one"); err != nil {
			return err
		}
	}
	if dlx {
		return c.ensureExchange(pr, c.dlx, amqp.ExchangeDirect,
			"the dead-letter exchange routes by queue name: it must be a direct (or topic) exchange; delete it and the client declares it")
	}
	return nil
}

func (c *Client) ensureExchange(pr *exchangeProbe, name, want, hint string) error {
	ch, err := pr.channel()
	if err != nil {
		return fmt.Errorf("rabbitmq: declare exchange %q: %w", name, err)
	}
	err = ch.ExchangeDeclare(name, want, true, false, false, false, nil)
	if err == nil {
		c.kinds.Store(name, want)
		return nil
	}
	pr.failed()
	arg, cur, ok := inequivalent(err)
	if !ok {
		return declareError(fmt.Sprintf("declare exchange %q", name), err)
	}
	kind := want
	if arg == "type" {
		kind = cur
	}
	if kind != amqp.ExchangeTopic && kind != amqp.ExchangeDirect {
		return &brokerError{kind: ErrPreconditionFailed, op: fmt.Sprintf("exchange %q is a %s exchange", name, kind), cause: err, hint: hint}
	}
	if prev, loaded := c.kinds.Swap(name, kind); !loaded || prev != kind {
		c.cfg.log.Info("rabbitmq: using the existing exchange as it is", "exchange", name, "type", kind, "differs_in", arg, "current", cur)
	}
	return nil
}

// exchangeKind returns the type of exchange x as the client found it.
func (c *Client) exchangeKind(x string) (string, bool) {
	v, ok := c.kinds.Load(x)
	if !ok {
		return "", false
	}
	return v.(string), true
}

// checkBindings fails fast for pattern bindings on an exchange that cannot
// route them (a direct exchange compares routing keys literally).
func (c *Client) checkBindings(p *plan) error {
	for _, b := range p.bindings {
		if b.pattern == "" {
			continue
		}
		if kind, ok := c.exchangeKind(b.exchange); ok && kind != amqp.ExchangeTopic {
			return &brokerError{kind: ErrPreconditionFailed,
				op: fmt.Sprintf("exchange %q is a %s exchange, which routes literal topics only, but group %q subscribes to the pattern %q (binding key %q)",
					b.exchange, kind, p.group, b.pattern, b.key),
				hint: "patterns need a topic exchange: name one in rabbitmq.Exchanges, or subscribe to literal topics only"}
		}
	}
	return nil
}

// ensureDeadLetterQueue declares the dead-letter queue q unless it exists,
// and binds it to the dead-letter exchange. An existing queue is taken as it
// is, whatever its type: a client configured differently (an operator's,
// reading dead letters) must not fail on it. It uses channels of its own,
// since a passive declare of a missing queue closes its channel.
func (c *Client) ensureDeadLetterQueue(conn *amqp.Connection, q string) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	_, perr := ch.QueueDeclarePassive(q, true, false, false, false, nil)
	if perr != nil {
		var ae *amqp.Error
		if !errors.As(perr, &ae) || ae.Code != amqp.NotFound {
			_ = ch.Close()
			return declareError(fmt.Sprintf("dead-letter queue %q", q), perr)
		}
		if ch, err = conn.Channel(); err != nil {
			return err
		}
		if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": string(c.cfg.queueType)}); err != nil {
			_ = ch.Close()
			return declareError(fmt.Sprintf("declare dead-letter queue %q", q), err)
		}
	}
	defer ch.Close()
	if err := ch.QueueBind(q, q, c.dlx, false, nil); err != nil {
		return declareError(fmt.Sprintf("bind dead-letter queue %q to %q", q, c.dlx), err)
	}
	return nil
}

// declare sets up the plan's topology on ch and returns the names of the
// queues to consume (the server-named queue's name is only known now).
func (c *Client) declare(conn *amqp.Connection, ch *amqp.Channel, p *plan) ([]string, error) {
	if err := c.ensureExchanges(conn, p.dlDeclare); err != nil {
		return nil, err
	}
	if err := c.checkBindings(p); err != nil {
		return nil, err
	}
	if p.dlDeclare {
		dls := p.queues
		if !p.dlRead {
			dls = []string{p.dlQueue}
		}
		for _, q := range dls {
			if err := c.ensureDeadLetterQueue(conn, q); err != nil {
				return nil, err
			}
		}
	}
	if p.dlRead {
		if !p.dlDeclare {
			for _, q := range p.queues {
				if _, err := ch.QueueDeclarePassive(q, true, false, false, false, nil); err != nil {
					return nil, declareError(fmt.Sprintf("dead-letter queue %q", q), err)
				}
			}
		}
		return p.queues, nil
	}
	queues := p.queues
	switch {
	case p.existing:
		if _, err := ch.QueueDeclarePassive(queues[0], true, false, false, false, nil); err != nil {
			return nil, declareError(fmt.Sprintf("queue %q (declared by the user)", queues[0]), err)
		}
	case p.declareQueue:
		q, err := ch.QueueDeclare(queues[0], !p.serverNamed, p.serverNamed, p.serverNamed, false, p.args)
		if err != nil {
			return nil, declareError(fmt.Sprintf("declare queue %q", queues[0]), err)
		}
		queues = []string{q.Name}
		for _, b := range p.bindings {
			if err := ch.QueueBind(q.Name, b.key, b.exchange, false, nil); err != nil {
				return nil, declareError(fmt.Sprintf("bind queue %q to %q on %q", q.Name, b.key, b.exchange), err)
			}
		}
	}
	for _, t := range p.tiers {
		args := amqp.Table{
			"x-queue-type":              string(Classic),
			"x-message-ttl":             t.delay.Milliseconds(),
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": queues[0],
		}
		if _, err := ch.QueueDeclare(t.name, true, false, false, false, args); err != nil {
			return nil, declareError(fmt.Sprintf("declare retry tier %q", t.name), err)
		}
	}
	return queues, nil
}

// DeclareGroup declares what a listener of group consuming topics would
// declare, without running one: the exchanges, the group's queue with its
// dead-letter queue and retry tiers, and one binding per topic and
// exchange. It is for services that only emit: until some queue is bound
// for a topic, the broker drops what is published to it, and Emit fails
// with dispytch.ErrUnroutable. Topics are listener topics ("orders",
// "user.{id}.created"); AMQP's own wildcards work too ("user.*.created",
// "audit.#"). Bindings are only added, never removed. With ExistingQueue
// for group, the queue is only checked. It fails with
// DeclareTopology(false), and for a group "" (a listener without a group
// gets a queue of its own that only it can declare).
//
//	err := client.DeclareGroup(ctx, "billing", "user_events", "user.*.created")
func (c *Client) DeclareGroup(ctx context.Context, group string, topics ...string) error {
	sub := backend.Subscription{Group: group, Delimiter: "."}
	for _, t := range topics {
		pat, err := topic.Parse(t, ".")
		if err != nil {
			return fmt.Errorf("rabbitmq: declare group %q: %w", group, err)
		}
		if pat.IsLiteral() && !slices.Contains(strings.Split(t, "."), "#") {
			sub.Topics = append(sub.Topics, t)
		} else {
			sub.Patterns = append(sub.Patterns, pat)
		}
	}
	return c.DeclareSubscription(ctx, sub)
}

// DeclareSubscription is DeclareGroup for a listener's subscription, so
// that a service declares exactly what its listener will consume:
//
//	sub, err := listener.Subscription()
//	err = client.DeclareSubscription(ctx, sub)
func (c *Client) DeclareSubscription(ctx context.Context, sub backend.Subscription) error {
	if ctx == nil {
		return errors.New("rabbitmq: declare: nil context")
	}
	if !c.cfg.declare {
		return errors.New("rabbitmq: declare: the client was made with DeclareTopology(false) and declares nothing")
	}
	if sub.Group == "" {
		return errors.New("rabbitmq: declare: no group: a listener without a group consumes an exclusive queue that only it can declare")
	}
	p, err := c.plan(sub)
	if err != nil {
		return err
	}
	conn, err := c.pubConn.get(ctx, true)
	if err != nil {
		return fmt.Errorf("rabbitmq: declare group %q: %w", sub.Group, err)
	}
	done := make(chan error, 1)
	go func() {
		ch, err := conn.Channel()
		if err != nil {
			done <- fmt.Errorf("rabbitmq: declare group %q: %w", sub.Group, err)
			return
		}
		_, err = c.declare(conn, ch, p)
		_ = ch.Close()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("rabbitmq: declare group %q: %w", sub.Group, backend.ContextError(ctx.Err()))
	}
}
