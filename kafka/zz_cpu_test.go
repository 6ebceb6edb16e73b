package kafka_test

import (
	"syscall"
	"testing"
	"time"
)

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkZZCPU(b *testing.B) {
	x := newBench(b)
	for round := 0; round < 3; round++ {
		for _, name := range []string{"raw", "emit-async"} {
			topic := x.topic("produce")
			evs := benchEvents(topic, b.N)
			c0 := cpuNow()
			var d time.Duration
			if name == "raw" {
				d = x.produceRaw(topic, evs)
			} else {
				d = x.emitAsync(evs)
			}
			c := cpuNow() - c0
			b.Logf("%s: %.0f ev/s, cpu %.2f us/ev, util %.2f", name, float64(b.N)/d.Seconds(), float64(c.Microseconds())/float64(b.N), c.Seconds()/d.Seconds())
		}
	}
}
