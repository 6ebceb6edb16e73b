package dispytch

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/topic"
)

// route is one registered topic (literal or pattern) with its handlers by
// event type.
type route struct {
	pattern *topic.Pattern
	byType  map[string][]*handler
}

// routeMatch is a route that matched a concrete topic, with its segments.
type routeMatch struct {
	r   *route
	seg *segmentMatch
}

// router finds the routes of a topic. Results are cached per topic in a
// copy-on-write map, so that lookups take no lock.
type router struct {
	literal  map[string]*route
	patterns []*route

	mu    sync.Mutex // serialises cache writers
	cache atomic.Pointer[map[string][]routeMatch]
}

// routeCacheMax bounds the cached topics; past it, topics (say, one per
// user with dynamic topics) are matched on every message.
const routeCacheMax = 1024

func newRouter(routes []*route) *router {
	rt := &router{literal: map[string]*route{}}
	rt.cache.Store(&map[string][]routeMatch{})
	for _, r := range routes {
		if r.pattern.IsLiteral() {
			rt.literal[r.pattern.String()] = r
		} else {
			rt.patterns = append(rt.patterns, r)
		}
	}
	sort.Slice(rt.patterns, func(i, j int) bool { return rt.patterns[i].pattern.String() < rt.patterns[j].pattern.String() })
	return rt
}

func (rt *router) match(topic string) []routeMatch {
	if ms, ok := (*rt.cache.Load())[topic]; ok {
		return ms
	}
	var ms []routeMatch
	if r := rt.literal[topic]; r != nil {
		ms = append(ms, routeMatch{r: r})
	}
	for _, r := range rt.patterns {
		if vals, ok := r.pattern.AppendMatch(nil, topic); ok {
			ms = append(ms, routeMatch{r: r, seg: &segmentMatch{names: r.pattern.Names(), vals: vals}})
		}
	}
	rt.mu.Lock()
	if old := *rt.cache.Load(); len(old) < routeCacheMax {
		next := make(map[string][]routeMatch, len(old)+1)
		for k, v := range old {
			next[k] = v
		}
		next[topic] = ms
		rt.cache.Store(&next)
	}
	rt.mu.Unlock()
	return ms
}

// subscription lists the routes for a consumer.
func (rt *router) subscription(group, delim string) backend.Subscription {
	s := backend.Subscription{Group: group, Delimiter: delim}
	for t := range rt.literal {
		s.Topics = append(s.Topics, t)
	}
	sort.Strings(s.Topics)
	for _, r := range rt.patterns {
		s.Patterns = append(s.Patterns, r.pattern)
	}
	return s
}
