package dispytch

import (
	"sort"
	"sync"
)

// route is one registered topic (literal or pattern) with its handlers by
// event type.
type route struct {
	pattern *Pattern
	byType  map[string][]*handler
}

// routeMatch is a route that matched a concrete topic, with its segments.
type routeMatch struct {
	r   *route
	seg *segmentMatch
}

// router finds the routes of a topic. Results are cached per topic.
type router struct {
	literal  map[string]*route
	patterns []*route

	mu    sync.RWMutex
	cache map[string][]routeMatch
}

const routeCacheMax = 4096

func newRouter(routes []*route) *router {
	rt := &router{literal: map[string]*route{}, cache: map[string][]routeMatch{}}
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
	rt.mu.RLock()
	ms, ok := rt.cache[topic]
	rt.mu.RUnlock()
	if ok {
		return ms
	}
	if r := rt.literal[topic]; r != nil {
		ms = append(ms, routeMatch{r: r})
	}
	for _, r := range rt.patterns {
		if vals, ok := r.pattern.match(topic, nil); ok {
			ms = append(ms, routeMatch{r: r, seg: &segmentMatch{names: r.pattern.names, vals: vals}})
		}
	}
	rt.mu.Lock()
	if len(rt.cache) < routeCacheMax {
		rt.cache[topic] = ms
	}
	rt.mu.Unlock()
	return ms
}

// subscription lists the routes for a consumer.
func (rt *router) subscription(group, delim string) Subscription {
	s := Subscription{Group: group, Delimiter: delim}
	for t := range rt.literal {
		s.Topics = append(s.Topics, t)
	}
	sort.Strings(s.Topics)
	for _, r := range rt.patterns {
		s.Patterns = append(s.Patterns, r.pattern)
	}
	return s
}
