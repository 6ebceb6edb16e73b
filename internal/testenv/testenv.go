// Package testenv lets tests that need a real broker skip with a clear
// message when it is unreachable, unless DISPYTCH_REQUIRE_BROKERS=1 (CI sets
// it), in which case they fail.
package testenv

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Required reports whether brokers are required (DISPYTCH_REQUIRE_BROKERS=1).
func Required() bool { return os.Getenv("DISPYTCH_REQUIRE_BROKERS") == "1" }

// Unavailable skips t, or fails it when brokers are required.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf("DISPYTCH_REQUIRE_BROKERS=1 but "+format, args...)
	}
	t.Skipf(format+" (set DISPYTCH_REQUIRE_BROKERS=1 to fail instead)", args...)
}

// RequireTCP makes sure something listens at addr.
func RequireTCP(t testing.TB, name, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		Unavailable(t, "%s is not reachable at %s: %v", name, addr, err)
		return
	}
	c.Close()
}

// RequireCommand makes sure a command is on PATH and returns its path.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Unavailable(t, "command %s is not installed: %v", name, err)
	}
	return p
}

// Getenv returns the environment variable key, or def when it is empty.
func Getenv(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
