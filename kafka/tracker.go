package kafka

// tracker follows the records of one partition that were handed to the
// listener, in offset order, and computes the commit mark: one past the last
// record of the longest done prefix. A record finishing early never moves
// the mark past an earlier one still in flight or waiting for redelivery.
//
// Records are identified by a sequence number from add. The zero tracker is
// ready to use; it is not safe for concurrent use.
type tracker struct {
	ring []slot // circular buffer of the records after the mark
	head int    // index of the oldest record in ring
	n    int    // records in ring
	base uint64 // sequence number of ring[head]

	// mark is the next offset to commit and markEpoch the leader epoch of
	// the record before it; mark is -1 until a record is done.
	mark      int64
	markEpoch int32
}

type slot struct {
	offset int64
	epoch  int32
	done   bool
}

func newTracker() tracker { return tracker{mark: -1, markEpoch: -1} }

// add appends a record and returns its sequence number. Records are added
// in fetch order; should an offset repeat (the fetch position moved back),
// the mark may move back too, and the caller commits it only when it is
// above what was committed.
func (t *tracker) add(offset int64, epoch int32) uint64 {
	if t.n == len(t.ring) {
		t.grow()
	}
	t.ring[(t.head+t.n)%len(t.ring)] = slot{offset: offset, epoch: epoch}
	t.n++
	return t.base + uint64(t.n-1)
}

func (t *tracker) grow() {
	size := max(2*len(t.ring), 16)
	ring := make([]slot, size)
	for i := range t.n {
		ring[i] = t.ring[(t.head+i)%len(t.ring)]
	}
	t.ring, t.head = ring, 0
}

// done marks the record seq as done and advances the mark over the done
// prefix. It reports whether the mark moved. Unknown or already passed
// sequence numbers are ignored.
func (t *tracker) done(seq uint64) bool {
	if seq < t.base || seq >= t.base+uint64(t.n) {
		return false
	}
	t.ring[(t.head+int(seq-t.base))%len(t.ring)].done = true
	moved := false
	for t.n > 0 {
		s := &t.ring[t.head]
		if !s.done {
			break
		}
		t.mark, t.markEpoch = s.offset+1, s.epoch
		*s = slot{}
		t.head = (t.head + 1) % len(t.ring)
		t.n--
		t.base++
		moved = true
	}
	return moved
}

// dropLast removes the newest record if it is seq: a record that was added
// but could not be handed over.
func (t *tracker) dropLast(seq uint64) {
	if t.n > 0 && seq == t.base+uint64(t.n-1) {
		t.ring[(t.head+t.n-1)%len(t.ring)] = slot{}
		t.n--
	}
}

// inFlight returns how many records follow the mark.
func (t *tracker) inFlight() int { return t.n }
