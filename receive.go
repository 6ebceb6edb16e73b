package dispytch

// Receiving: the listener's side of a consumer (the backend.Inbox). Deliveries
// enter the scheduler, which bounds the work in flight (backpressure) and
// keeps each ordering key in order; shutdown stops intake and drains.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/internal/sched"
)

// runState is one Run: it is the consumer's backend.Inbox.
type runState struct {
	l     *Listener
	c     *compiled
	sched *sched.Scheduler[*backend.Delivery]

	stop       context.Context // Run's context: done means shut down
	hard       context.Context // handlers' context: cancelled at the shutdown timeout
	hardCancel context.CancelFunc

	readyCh   chan struct{}
	readyOnce sync.Once
	done      chan struct{}
	stopping  atomic.Bool
	inflight  sync.WaitGroup
	msgs      sync.Pool // *msgState
	settleMu  sync.RWMutex
	abandoned atomic.Bool
}

func (r *runState) Ready() {
	r.readyOnce.Do(func() {
		r.l.health.ready(r)
		close(r.readyCh)
	})
}

func (r *runState) Done() <-chan struct{} { return r.done }

func (r *runState) Deliver(ctx context.Context, d *backend.Delivery) error {
	if r.stopping.Load() {
		return ErrStopping
	}
	key := d.OrderingKey
	if key == "" && r.l.orderByKey && len(d.Key) > 0 {
		key = string(d.Key)
	}
	r.inflight.Add(1)
	r.l.stats.received.Add(1)
	if err := r.sched.Submit(ctx, key, d); err != nil {
		r.inflight.Done()
		r.l.stats.received.Add(-1)
		if errors.Is(err, sched.ErrClosed) {
			return ErrStopping
		}
		return err
	}
	return nil
}

// shutdown stops intake, waits for in-flight work up to the timeout and
// abandons the rest; then closes done.
func (r *runState) shutdown() {
	r.stopping.Store(true)
	r.sched.Close()
	r.l.log.Info("dispytch: listener stopping", "in_flight", r.l.Stats().InFlight, "timeout", r.l.shutdownTimeout.String())
	drained := make(chan struct{})
	go func() {
		r.inflight.Wait()
		close(drained)
	}()
	t := time.NewTimer(r.l.shutdownTimeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
		// New settlements bail out; settlements under way (a dead-letter
		// publish stuck on a broker outage, say) are cancelled; then wait
		// for them, so that nothing is settled after Done.
		r.abandoned.Store(true)
		r.hardCancel()
		r.settleMu.Lock()
		r.settleMu.Unlock()
		r.l.log.Warn("dispytch: shutdown timeout: leaving unfinished messages unacked for redelivery",
			"in_flight", r.l.Stats().InFlight, "timeout", r.l.shutdownTimeout.String())
	}
	close(r.done)
}

// readyQueue is the least number of deliveries that wait for a free worker
// (Concurrency of them when that is more). With a queue only as deep as a
// small Concurrency, the consumer and the workers hand over one delivery per
// wake-up and throughput halves. Deliveries still waiting when shutdown
// begins are not started: they are left unacked for redelivery, so a deeper
// queue does not lengthen shutdown.
const readyQueue = 64

// perKeyQueue bounds the deliveries waiting behind a busy ordering key
// (a Kafka partition whose record is being handled). Busy keys are at most
// Concurrency, so at most Concurrency*perKeyQueue deliveries wait.
const perKeyQueue = 32
