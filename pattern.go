package dispytch

import "github.com/dispytch/dispytch-go/topic"

// Pattern is a parsed topic pattern; see package topic.
type Pattern = topic.Pattern

// segmentMatch holds the wildcard values of one matched pattern.
type segmentMatch struct {
	names []string
	vals  []string
}

func (s *segmentMatch) get(name string) string {
	for i, n := range s.names {
		if n == name {
			return s.vals[i]
		}
	}
	return ""
}
