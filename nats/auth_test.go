package nats_test

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
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	dnats "github.com/dispytch/dispytch-go/nats"
)

// serverWith starts an in-process nats-server with JetStream and opts
// applied.
func serverWith(t *testing.T, opts func(*server.Options)) string {
	t.Helper()
	o := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	opts(o)
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.Addr().(*net.TCPAddr).String()
}

// roundTrip emits one event and waits for a listener to handle it.
func roundTrip(t *testing.T, c *dnats.Client) {
	t.Helper()
	got := make(chan struct{}, 1)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup("auth"), dispytch.WithLogger(quietLog()))
	l.Handle("auth.events", "raw_event", func() { got <- struct{}{} })
	run(t, l)
	if err := dispytch.NewEmitter(c).Emit(ctxT(t, 5*time.Second), rawEvent{To: "auth.events"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("not delivered")
	}
}

// Authentication by NKey seed, by user and password and by token; a wrong
// credential fails emits with the server's reason.
func TestAuth(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("nkey", func(t *testing.T) {
		addr := serverWith(t, func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} })
		roundTrip(t, newClient(t, "nats://"+addr, dnats.NKeyFromSeed(seedFile), dnats.WithLogger(quietLog())))
	})
	t.Run("user", func(t *testing.T) {
		addr := serverWith(t, func(o *server.Options) { o.Username, o.Password = "svc", "s3cret" })
		roundTrip(t, newClient(t, "nats://"+addr, dnats.UserInfo("svc", "s3cret"), dnats.WithLogger(quietLog())))
		bad := newClient(t, "nats://"+addr, dnats.UserInfo("svc", "wrong"), dnats.WithLogger(quietLog()))
		eventually(t, 5*time.Second, "the refused login reported", func() bool {
			st := bad.ConnStatus()
			return st.Err != nil && strings.Contains(strings.ToLower(st.Err.Error()), "authorization")
		})
		err := dispytch.NewEmitter(bad).Emit(ctxT(t, 3*time.Second), rawEvent{To: "auth.events"})
		if !errors.Is(err, dispytch.ErrNotSent) || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Fatalf("emit with a wrong password: %v", err)
		}
		if st := bad.ConnStatus(); st.State == backend.ConnReady || st.Err == nil || !strings.Contains(strings.ToLower(st.Err.Error()), "authorization") {
			t.Fatalf("status with a wrong password: %+v", st)
		}
		// nats.go gives up after refused logins: a listener returns the reason.
		l := dispytch.NewListener(bad, dispytch.ConsumerGroup("auth"), dispytch.WithLogger(quietLog()), dispytch.StartTimeout(5*time.Second))
		l.Handle("auth.events", "raw_event", func() {})
		if err := l.Run(ctxT(t, 10*time.Second)); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Fatalf("listener with a wrong password: %v", err)
		}
	})
	t.Run("token", func(t *testing.T) {
		addr := serverWith(t, func(o *server.Options) { o.Authorization = "tok3n" })
		roundTrip(t, newClient(t, "nats://"+addr, dnats.Token("tok3n"), dnats.WithLogger(quietLog())))
	})
}

// A TLS server, trusted through the TLS option.
func TestTLS(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	addr := serverWith(t, func(o *server.Options) {
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
		o.TLS = true
	})
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	roundTrip(t, newClient(t, "tls://"+addr, dnats.TLS(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}), dnats.WithLogger(quietLog())))
	_ = context.Background
}
