package kafka_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/kafka"
)

// roundTrip emits one event and handles it with the given connection
// options.
func roundTrip(t *testing.T, c *kfake.Cluster, topic string, opts ...kafka.Option) {
	t.Helper()
	var popts []kafka.ProducerOption
	var copts []kafka.ConsumerOption
	for _, o := range opts {
		popts = append(popts, o)
		copts = append(copts, o)
	}
	p := newProducer(t, c, popts...)
	if err := p.CreateTopics(context.Background(), 2, topic, topic+"-svc.dlq"); err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	l := dispytch.NewListener(newConsumer(t, c, copts...), dispytch.Group(topic+"-svc"), dispytch.WithLogger(testLogger()))
	l.Handle(topic, "ev", func(ev dispytch.Event[Ev]) { got.Store(int64(ev.Body.Seq)) })
	start(t, l)
	if err := dispytch.NewEmitter(p).Emit(context.Background(), Ev{T: topic, Seq: 7}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "event handled", func() bool { return got.Load() == 7 })
}

// TestSASL connects with SASL/PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512; a
// wrong password fails the emit and stops the consumer with an error.
func TestSASL(t *testing.T) {
	c := newCluster(t, kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "plain-user", "plain-pass"),
		kfake.Superuser("SCRAM-SHA-256", "scram256", "pass256"),
		kfake.Superuser("SCRAM-SHA-512", "scram512", "pass512"))
	roundTrip(t, c, "plain", kafka.SASLPlain("plain-user", "plain-pass"))
	roundTrip(t, c, "scram256", kafka.SASLScramSHA256("scram256", "pass256"))
	roundTrip(t, c, "scram512", kafka.SASLScramSHA512("scram512", "pass512"))

	bad := newProducer(t, c, kafka.SASLScramSHA256("scram256", "wrong"), kafka.ClientOptions(kgo.RetryTimeout(2*time.Second)))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := dispytch.NewEmitter(bad).Emit(ctx, Ev{T: "plain"})
	if !errors.Is(err, dispytch.ErrTimeout) {
		t.Fatalf("emit with a wrong password: %v, want a timeout (franz-go retries failed authentication)", err)
	}
	// A consumer with a wrong password consumes nothing; franz-go keeps
	// retrying (and logging) the authentication until the listener stops.
	var handled atomic.Int64
	l := dispytch.NewListener(newConsumer(t, c, kafka.SASLPlain("plain-user", "wrong")), dispytch.Group("bad-svc"),
		dispytch.OnFailure(dispytch.Drop), dispytch.PoisonPolicy(dispytch.Drop), dispytch.WithLogger(testLogger()))
	l.Handle("plain", "ev", func(ev dispytch.Event[Ev]) { handled.Add(1) })
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	if err := l.Run(rctx); err != nil {
		t.Fatalf("run: %v", err)
	}
	if handled.Load() != 0 {
		t.Fatalf("a consumer with a wrong password handled %d events", handled.Load())
	}
}

// TestTLS connects over TLS to a cluster with a self-signed certificate.
func TestTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	serverCfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
	c := newCluster(t, kfake.TLS(serverCfg))
	roundTrip(t, c, "secure", kafka.TLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
}
