package memory_test

import (
	"context"
	"testing"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/backend/backendtest"
	"github.com/dispytch/dispytch-go/memory"
)

// The memory broker passes the backend conformance suite: one broker for
// the whole run, as a process's embedded broker is.
func TestConformance(t *testing.T) {
	b := memory.New()
	t.Cleanup(func() { b.Close(context.Background()) })
	backendtest.Run(t, backendtest.Backend{
		Name: "memory",
		New:  func(testing.TB) (backend.Producer, backend.Consumer) { return b, b },
		Features: backendtest.Features{
			Persistent:      true,
			ConsumerGroups:  true,
			OrderPerKey:     true,
			NewTopics:       true,
			DeadLetterStore: true,
		},
	})
}
