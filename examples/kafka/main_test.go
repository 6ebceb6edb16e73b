package main

import "testing"

// TestRun runs the example end to end on its embedded Kafka cluster, as
// `go run ./examples/kafka` does without a -brokers flag.
func TestRun(t *testing.T) {
	if err := run(""); err != nil {
		t.Fatal(err)
	}
}
