package nats

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/dispytch/dispytch-go/backend"
)

// Topology. Topics are subjects; a listener's patterns become NATS
// wildcards ({x} is *, {x...} is >), and the listener re-checks every
// delivery's topic in process. The events stream (Stream) holds every
// subject but the dead letters', which go to a stream of their own
// (DeadLetterStream): a subject ending in ".dlq" belongs there. Listeners
// add their subjects (and their group's dead-letter subject) before they
// subscribe; an emit to a subject no stream holds adds it to the events
// stream and is published again, once. Subjects already covered by a
// wildcard of the stream are not added, and a wildcard added replaces the
// subjects it covers.

type topology struct {
	mu      sync.Mutex
	covered map[string]string // subject -> stream, known to hold it
}

// streamFor names the stream a subject belongs to.
func (c *Client) streamFor(subject string) string {
	if strings.HasSuffix(subject, ".dlq") {
		return c.cfg.dlStream
	}
	return c.cfg.stream
}

// ensureSubjects makes stream hold subjects, creating the stream when it
// is missing. Without DeclareTopology it only checks that the stream exists.
func (c *Client) ensureSubjects(ctx context.Context, stream string, subjects []string) error {
	c.topo.mu.Lock()
	defer c.topo.mu.Unlock()
	missing := subjects[:0:0]
	for _, s := range subjects {
		if c.topo.covered[s] != stream {
			missing = append(missing, s)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if !c.cfg.declare {
		st, err := c.js.Stream(ctx, stream)
		if err != nil {
			return streamError(stream, "look up", err)
		}
		for _, s := range missing {
			if !coveredBy(st.CachedInfo().Config.Subjects, s) {
				return fmt.Errorf("nats: stream %s does not hold subject %s, and DeclareTopology(false) forbids adding it: %w", stream, s, backend.ErrPermanent)
			}
			c.topo.covered[s] = stream
		}
		return nil
	}
	// Read, merge, write: another client may update the stream meanwhile,
	// so read it back until it holds every subject.
	for try := 0; ; try++ {
		st, err := c.js.Stream(ctx, stream)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			cfg := jetstream.StreamConfig{
				Name:       stream,
				Subjects:   mergeSubjects(slices.Clone(c.streamSubjects(stream)), missing),
				Storage:    c.cfg.storage,
				Replicas:   c.cfg.replicas,
				Duplicates: c.cfg.dupWindow,
				MaxAge:     c.cfg.maxAge,
			}
			_, err = c.js.CreateStream(ctx, cfg)
			if err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				return streamError(stream, "create", err)
			}
			continue
		case err != nil:
			return streamError(stream, "look up", err)
		}
		cfg := st.CachedInfo().Config
		merged := mergeSubjects(slices.Clone(cfg.Subjects), missing)
		done := true
		for _, s := range missing {
			if !coveredBy(cfg.Subjects, s) {
				done = false
			}
		}
		if done {
			for _, s := range missing {
				c.topo.covered[s] = stream
			}
			return nil
		}
		if try >= 5 {
			return fmt.Errorf("nats: stream %s: subjects %v not added after %d tries (concurrent updates)", stream, missing, try)
		}
		cfg.Subjects = merged
		if _, err := c.js.UpdateStream(ctx, cfg); err != nil {
			return streamError(stream, "add subjects "+strings.Join(missing, " ")+" to", err)
		}
	}
}

// streamSubjects are the subjects a stream is created with, besides
// those asked for.
func (c *Client) streamSubjects(stream string) []string {
	if stream == c.cfg.stream {
		return c.cfg.subjects
	}
	return nil
}

func streamError(stream, what string, err error) error {
	err = fmt.Errorf("nats: %s stream %s: %w", what, stream, err)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code >= 400 && apiErr.Code < 500 {
		return fmt.Errorf("%w: %w", backend.ErrPermanent, err)
	}
	return err
}

// forget drops what the client knows of a stream's subjects (after an
// emit found a subject missing: the stream was changed or deleted).
func (c *Client) forget(subject string) {
	c.topo.mu.Lock()
	delete(c.topo.covered, subject)
	c.topo.mu.Unlock()
}

// mergeSubjects adds add to have: a subject covered by one of have is
// left out, and subjects of have that a new one covers are replaced by it.
func mergeSubjects(have, add []string) []string {
	for _, s := range add {
		if coveredBy(have, s) {
			continue
		}
		have = slices.DeleteFunc(have, func(h string) bool { return covers(s, h) })
		have = append(have, s)
	}
	return have
}

func coveredBy(have []string, s string) bool {
	for _, h := range have {
		if covers(h, s) {
			return true
		}
	}
	return false
}

// covers reports whether every subject s matches also matches the
// subject filter w (both may have wildcards).
func covers(w, s string) bool {
	wt, st := strings.Split(w, "."), strings.Split(s, ".")
	for i, t := range wt {
		if t == ">" {
			return len(st) > i
		}
		if i >= len(st) {
			return false
		}
		switch {
		case t == "*":
			if st[i] == ">" {
				return false
			}
		case t != st[i]:
			return false
		}
	}
	return len(wt) == len(st)
}

// checkSubject checks a subject: tokens not empty, no white space, and
// wildcards (whole tokens, > last) only when wild.
func checkSubject(s string, wild bool) error {
	if s == "" {
		return errors.New("empty subject")
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) {
			switch s[i] {
			case ' ', '\t', '\r', '\n':
				return fmt.Errorf("subject %q: white space", s)
			case '*', '>':
				if !wild {
					return fmt.Errorf("subject %q: wildcards are not allowed in a published subject", s)
				}
			}
			if s[i] != '.' {
				continue
			}
		}
		tok := s[start:i]
		switch {
		case tok == "":
			return fmt.Errorf("subject %q: empty token", s)
		case tok == ">" && i != len(s):
			return fmt.Errorf("subject %q: > must be the last token", s)
		}
		start = i + 1
	}
	return nil
}

// filters returns the subjects of a subscription: its topics and its
// patterns as NATS wildcards, each covered by no other.
func filters(sub backend.Subscription) ([]string, error) {
	if len(sub.Patterns) > 0 && sub.Delimiter != "." {
		return nil, fmt.Errorf("nats: consume: topic patterns need the delimiter \".\" of NATS subjects, the listener uses %q: %w", sub.Delimiter, backend.ErrPermanent)
	}
	var out []string
	add := func(s string) error {
		if err := checkSubject(s, true); err != nil {
			return fmt.Errorf("nats: consume: %w: %w", err, backend.ErrPermanent)
		}
		out = mergeSubjects(out, []string{s})
		return nil
	}
	for _, t := range sub.Topics {
		if err := add(t); err != nil {
			return nil, err
		}
	}
	for _, p := range sub.Patterns {
		if err := add(p.Format("*", ">")); err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("nats: consume: the subscription has no topic: %w", backend.ErrPermanent)
	}
	slices.Sort(out)
	return out, nil
}

// durableName is the durable consumer name of a group: NATS names cannot
// hold . * > or white space, which become _.
func durableName(group string) string {
	if group == "" {
		group = "dispytch"
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', '*', '>', ' ', '\t', '\r', '\n', '/', '\\':
			return '_'
		}
		return r
	}, group)
}
