package kafka_test

import (
	"bytes"
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
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

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
	l := dispytch.NewListener(newConsumer(t, c, copts...), dispytch.ConsumerGroup(topic+"-svc"), dispytch.WithLogger(testLogger()))
	l.Handle(topic, "ev", func(ev dispytch.Event[Ev]) { got.Store(int64(ev.Body.Seq)) })
	start(t, l)
	if err := dispytch.NewEmitter(p).Emit(context.Background(), Ev{T: topic, Seq: 7}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "event handled", func() bool { return got.Load() == 7 })
}

// TestSASL connects with SASL/PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512; an
// emit with a wrong password ends at its deadline, unconfirmed.
func TestSASL(t *testing.T) {
	c := newCluster(t, kfake.EnableSASL(),
		kfake.Superuser("PLAIN", "plain-user", "plain-pass"),
		kfake.Superuser("SCRAM-SHA-256", "scram256", "pass256"),
		kfake.Superuser("SCRAM-SHA-512", "scram512", "pass512"))
	roundTrip(t, c, "plain", kafka.SASLPlain("plain-user", "plain-pass"))
	roundTrip(t, c, "scram256", kafka.SASLScramSHA256("scram256", "pass256"))
	roundTrip(t, c, "scram512", kafka.SASLScramSHA512("scram512", "pass512"))

	bad := newProducer(t, c, kafka.SASLScramSHA256("scram256", "wrong"), kafka.ClientOptions(kgo.RetryTimeout(2*time.Second)))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := dispytch.NewEmitter(bad).Emit(ctx, Ev{T: "plain"})
	if !errors.Is(err, dispytch.ErrTimeout) || !errors.Is(err, dispytch.ErrUnconfirmed) {
		t.Fatalf("emit with a wrong password: %v, want a timeout (franz-go retries failed authentication)", err)
	}
	// The record is still buffered: Close gives up on it at its deadline.
	cctx, ccancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer ccancel()
	if err := bad.Close(cctx); !errors.Is(err, dispytch.ErrTimeout) {
		t.Fatalf("close with a record that cannot be sent: %v", err)
	}
}

// rejectLikeKafka makes the cluster answer a SASL/PLAIN authentication
// whose password is "wrong" as a Kafka broker does, with
// SASL_AUTHENTICATION_FAILED and the broker's message, where kfake would
// just close the connection. Other authentications go to kfake.
func rejectLikeKafka(c *kfake.Cluster) {
	c.ControlKey(kmsg.SASLAuthenticate.Int16(), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		r := req.(*kmsg.SASLAuthenticateRequest)
		if !bytes.HasSuffix(r.SASLAuthBytes, []byte("\x00wrong")) {
			return nil, nil, false
		}
		resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed: Invalid username or password"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
}

// TestSASLFailureStopsListener: a listener whose consumer authenticates
// with a wrong password stops at once, long before its start timeout, with
// the broker's reason, a permanent error, wrapped in ErrNotReady. It used
// to retry (and log) until its context ended and then return nil.
func TestSASLFailureStopsListener(t *testing.T) {
	c := newCluster(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "plain-user", "plain-pass"))
	rejectLikeKafka(c)
	createTopicsAs(t, c, kafka.SASLPlain("plain-user", "plain-pass"), "plain")
	l := dispytch.NewListener(newConsumer(t, c, kafka.SASLPlain("plain-user", "wrong")), dispytch.ConsumerGroup("bad-svc"),
		dispytch.StartTimeout(20*time.Second), dispytch.WithLogger(testLogger()))
	l.Handle("plain", "ev", func(ev dispytch.Event[Ev]) {})
	began := time.Now()
	err := l.Run(context.Background())
	if !errors.Is(err, dispytch.ErrNotReady) || !errors.Is(err, dispytch.ErrPermanent) || !errors.Is(err, kerr.SaslAuthenticationFailed) ||
		!strings.Contains(err.Error(), "Invalid username or password") {
		t.Fatalf("run with a wrong password: %v", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("run with a wrong password took %v", took)
	}
}

// TestSASLFailureFailsEmit: an emit whose producer's credentials the broker
// refuses fails at once, not at its deadline, with the broker's reason: a
// permanent error, and not sent (the client never got a connection).
func TestSASLFailureFailsEmit(t *testing.T) {
	c := newCluster(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "plain-user", "plain-pass"))
	rejectLikeKafka(c)
	createTopicsAs(t, c, kafka.SASLPlain("plain-user", "plain-pass"), "plain")
	bad := newProducer(t, c, kafka.SASLPlain("plain-user", "wrong"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	em := dispytch.NewEmitter(bad)
	for range 2 { // a later emit tries again, and fails the same way
		began := time.Now()
		err := em.Emit(ctx, Ev{T: "plain"})
		if !errors.Is(err, dispytch.ErrPermanent) || !errors.Is(err, dispytch.ErrNotSent) || !errors.Is(err, kerr.SaslAuthenticationFailed) ||
			!strings.Contains(err.Error(), "Invalid username or password") {
			t.Fatalf("emit with a refused password: %v", err)
		}
		if took := time.Since(began); took > 10*time.Second {
			t.Fatalf("emit with a refused password took %v", took)
		}
	}
}

// TestGroupAuthorizationFailure: a user who may read the topic but not
// use the group gets kfake's GROUP_AUTHORIZATION_FAILED: Run stops at once
// with it, permanent, wrapped in ErrNotReady.
func TestGroupAuthorizationFailure(t *testing.T) {
	allow := func(res kmsg.ACLResourceType, name string, op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: res, Name: name, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true}
	}
	c := newCluster(t, kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser("PLAIN", "admin", "admin-pass"),
		kfake.User("PLAIN", "reader", "reader-pass",
			allow(kmsg.ACLResourceTypeTopic, "guarded", kmsg.ACLOperationRead),
			allow(kmsg.ACLResourceTypeTopic, "guarded", kmsg.ACLOperationDescribe)))
	createTopicsAs(t, c, kafka.SASLPlain("admin", "admin-pass"), "guarded")
	l := dispytch.NewListener(newConsumer(t, c, kafka.SASLPlain("reader", "reader-pass")), dispytch.ConsumerGroup("not-mine"),
		dispytch.StartTimeout(20*time.Second), dispytch.HandlerDefaults(dispytch.OnFailure(dispytch.PolicyDrop)), dispytch.PoisonPolicy(dispytch.PolicyDrop),
		dispytch.WithLogger(testLogger()))
	l.Handle("guarded", "ev", func(ev dispytch.Event[Ev]) {})
	began := time.Now()
	err := l.Run(context.Background())
	if !errors.Is(err, dispytch.ErrNotReady) || !errors.Is(err, dispytch.ErrPermanent) || !errors.Is(err, kerr.GroupAuthorizationFailed) {
		t.Fatalf("run without group access: %v", err)
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Fatalf("run without group access took %v", took)
	}
	t.Log(err)
}

// createTopicsAs creates topics through a producer with the given
// connection options.
func createTopicsAs(t *testing.T, c *kfake.Cluster, auth kafka.Option, topics ...string) {
	t.Helper()
	if err := newProducer(t, c, auth).CreateTopics(context.Background(), 1, topics...); err != nil {
		t.Fatal(err)
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
