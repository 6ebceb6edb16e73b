package redis_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/redis"
)

// A password-protected Redis: the right password works; a wrong one fails
// Emit and Run at once with Redis's reason, as permanent.
func TestAuth(t *testing.T) {
	srv := startServer(t, "--requirepass", "s3cret")
	good, err := redis.New("redis://:s3cret@"+srv.addr(), redis.WithLogger(testLogger()), redis.BlockTime(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { good.Close(context.Background()) })
	roundTrip(t, good, "auth.events")

	bad, err := redis.New("redis://"+srv.addr(), redis.Auth("", "wrong"), redis.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = dispytch.NewEmitter(bad).Emit(ctx, topicEvent{To: "auth.events"})
	if !errors.Is(err, dispytch.ErrPermanent) || !errors.Is(err, dispytch.ErrNotSent) || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("emit with a wrong password: %v", err)
	}
	l := dispytch.NewListener(bad, dispytch.WithLogger(testLogger()))
	l.Handle("auth.events", "test_event", func() {})
	start := time.Now()
	err = l.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "WRONGPASS") || time.Since(start) > 5*time.Second {
		t.Fatalf("Run with a wrong password: %v after %v", err, time.Since(start))
	}
}

// rediss://: TLS with the client's CA.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	caPool, certFile, keyFile := selfSigned(t, dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := &tls.Config{RootCAs: caPool, MinVersion: tls.VersionTLS12}
	srv := startServer(t, "--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", certFile, "--tls-key-file", keyFile,
		"--tls-ca-cert-file", certFile, "--tls-auth-clients", "no")
	_ = srv
	c, err := redis.New("rediss://127.0.0.1:"+strconv.Itoa(tlsPort), redis.TLS(cfg), redis.WithLogger(testLogger()),
		redis.BlockTime(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	roundTrip(t, c, "tls.events")
}

// roundTrip emits one event and handles it.
func roundTrip(t *testing.T, c *redis.Client, topic string) {
	t.Helper()
	got := make(chan int, 1)
	l := dispytch.NewListener(c, dispytch.ConsumerGroup("g"), dispytch.WithLogger(testLogger()))
	l.Handle(topic, "test_event", func(ev dispytch.Event[topicEvent]) { got <- ev.Body.N })
	run(t, l)
	if err := dispytch.NewEmitter(c).Emit(context.Background(), topicEvent{To: topic, N: 7}); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n != 7 {
			t.Fatal(n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not handled")
	}
	if st := c.ConnStatus(); st.State == backend.ConnClosed {
		t.Fatalf("%+v", st)
	}
}

// selfSigned writes a self-signed certificate for 127.0.0.1 and its key.
func selfSigned(t *testing.T, dir string) (*x509.CertPool, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dispytch test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool, certFile, keyFile
}
