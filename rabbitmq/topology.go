package rabbitmq

import (
	"errors"
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/dispytch/dispytch-go"
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

type binding struct{ exchange, key string }

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

func (c *Client) plan(sub dispytch.Subscription) (*plan, error) {
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
				p.bindings = append(p.bindings, binding{x, t})
			}
			for _, pat := range sub.Patterns {
				if pat == nil {
					return nil, errors.New("rabbitmq: consume: nil pattern in the subscription")
				}
				p.bindings = append(p.bindings, binding{x, pat.Format("*", "#")})
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
	if err := c.declareExchanges(ch); err != nil {
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
