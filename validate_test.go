package dispytch

import (
	"testing"

	"github.com/go-playground/validator/v10"
)

var emailSeeds = []string{
	"john.doe@example.com", "a@b.co", "x@y.z", "first.last+tag@sub.example-host.org", "user@localhost",
	"user@example.c0m", "user@-example.com", "user@example-.com", "user@ex..ample.com", "user@example.com.",
	".user@example.com", "user.@example.com", "us..er@example.com", "@example.com", "user@", "user@@example.com",
	"user@exa mple.com", "\"quoted local\"@example.com", "user@[127.0.0.1]", "üser@example.com", "user@exämple.com",
	"user@example.com (comment)", " user@example.com", "user@example.com ", "user@ex~ample.com", "user@ex.ample.c-m",
	"a!#$%&'*+-/=?^_`{|}~@example.com", "user@123.com", "user@example.123", "John <john@example.com>", "",
	"user@example.co\x00m", "user@e.x.a.m.p.l.e", "user@ex_ample.com", "user@xn--bcher-kva.example", "\xff@example.com",
}

// TestEmailTagMatchesBuiltIn checks the default validator's "email" tag
// against go-playground's own on the seeds; FuzzEmailTag goes further.
func TestEmailTagMatchesBuiltIn(t *testing.T) {
	ours, ref := newValidator(), validator.New()
	fast := 0
	for _, s := range emailSeeds {
		checkEmail(t, ours, ref, s)
		if plainEmail(s) {
			fast++
		}
	}
	if fast < 5 {
		t.Fatalf("the fast path took only %d seeds", fast)
	}
}

func FuzzEmailTag(f *testing.F) {
	for _, s := range emailSeeds {
		f.Add(s)
	}
	ours, ref := newValidator(), validator.New()
	f.Fuzz(func(t *testing.T, s string) { checkEmail(t, ours, ref, s) })
}

func checkEmail(t *testing.T, ours, ref *validator.Validate, s string) {
	t.Helper()
	want := ref.Var(s, "email") == nil
	if plainEmail(s) && !want {
		t.Fatalf("fast path accepts %q, the built-in tag does not", s)
	}
	if got := ours.Var(s, "email") == nil; got != want {
		t.Fatalf("email %q: ours %v, built-in %v", s, got, want)
	}
}
