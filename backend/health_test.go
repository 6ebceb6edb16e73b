package backend_test

import (
	"errors"
	"testing"

	"github.com/dispytch/dispytch-go/backend"
)

func TestConnTracker(t *testing.T) {
	var tr backend.ConnTracker
	if s := tr.Status(); s.State != backend.ConnConnecting || s.Err != nil {
		t.Fatalf("new: %+v", s)
	}
	refused := errors.New("connection refused")
	tr.Failed(refused)
	if s := tr.Status(); s.State != backend.ConnConnecting || !errors.Is(s.Err, refused) {
		t.Fatalf("failed before any success: %+v", s)
	}
	if tr.Succeeded() {
		t.Fatal("the first success reported as a reconnect")
	}
	if s := tr.Status(); s.State != backend.ConnReady || s.Err != nil || s.Reconnects != 0 {
		t.Fatalf("after the first success: %+v", s)
	}
	lost := errors.New("connection reset")
	tr.Failed(lost)
	if s := tr.Status(); s.State != backend.ConnReconnecting || !errors.Is(s.Err, lost) {
		t.Fatalf("lost: %+v", s)
	}
	if !tr.Succeeded() || tr.Succeeded() {
		t.Fatal("want one reconnect, reported once")
	}
	if s := tr.Status(); s.State != backend.ConnReady || s.Reconnects != 1 {
		t.Fatalf("reconnected: %+v", s)
	}
}
