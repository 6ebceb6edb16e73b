package dispytch

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
