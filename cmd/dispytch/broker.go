package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/dispytch/dispytch-go/backend"
	"github.com/dispytch/dispytch-go/topic"
)

const brokersHelp = `Brokers are given as a URL with -b (--broker), or in DISPYTCH_BROKER:

	kafka://host:9092[,host2:9092]        Kafka (kafkas:// for TLS)
	amqp://user:pass@host:5672/vhost      RabbitMQ (amqps:// for TLS); the exchange is
	                                      --exchange (DISPYTCH_EXCHANGE, default "dispytch")
	redis://user:pass@host:6379/0         Redis Streams (rediss:// for TLS); add ?mode=pubsub for
	                                      pub/sub, Python Dispytch's wire (tail: PSUBSCRIBE)
	nats://host:4222[,host2:4222]         NATS JetStream (tls:// for TLS); nats://token@host for a
	                                      token; the streams are the services' (found by subject)

Authentication and TLS, as flags or environment variables:

	--user, --password   DISPYTCH_USER, DISPYTCH_PASSWORD   (prefer the variable for the password)
	                     Kafka: SASL with --sasl plain|scram-sha-256|scram-sha-512 (DISPYTCH_SASL);
	                     AMQP: they replace the URL's user and password
	--tls                DISPYTCH_TLS=1       use TLS (implied by kafkas:// and amqps://)
	--tls-ca FILE        DISPYTCH_TLS_CA      trust this CA bundle (PEM) instead of the system's
	--tls-cert FILE      DISPYTCH_TLS_CERT    client certificate (PEM), with --tls-key
	--tls-key FILE       DISPYTCH_TLS_KEY
	--tls-server-name N  DISPYTCH_TLS_SERVER_NAME
	--tls-insecure       DISPYTCH_TLS_INSECURE=1   skip certificate verification (testing only)

The command line never writes passwords into its output.
`

// brokerConfig is how to reach a broker.
type brokerConfig struct {
	url                            string
	user, password, sasl           string
	tls, tlsInsecure               bool
	tlsCA, tlsCert, tlsKey, tlsSNI string
	exchange                       string
	timeout                        time.Duration
}

// addBrokerFlags registers the broker flags on fs, with defaults from the
// environment.
func (c *cli) addBrokerFlags(fs *flag.FlagSet) *brokerConfig {
	b := &brokerConfig{}
	env := func(k, def string) string {
		if v := c.getenv(k); v != "" {
			return v
		}
		return def
	}
	envBool := func(k string) bool { v := c.getenv(k); return v == "1" || v == "true" }
	fs.StringVar(&b.url, "b", env("DISPYTCH_BROKER", ""), "broker `URL` (kafka://host:9092, amqp://user:pass@host:5672/vhost, redis://host:6379); env DISPYTCH_BROKER")
	fs.StringVar(&b.url, "broker", env("DISPYTCH_BROKER", ""), "broker `URL`; same as -b")
	fs.StringVar(&b.user, "user", env("DISPYTCH_USER", ""), "user name (Kafka SASL; AMQP: replaces the URL's); env DISPYTCH_USER")
	fs.StringVar(&b.password, "password", env("DISPYTCH_PASSWORD", ""), "password; prefer env DISPYTCH_PASSWORD")
	fs.StringVar(&b.sasl, "sasl", env("DISPYTCH_SASL", ""), "Kafka SASL `mechanism`: plain, scram-sha-256, scram-sha-512 (default plain with --user); env DISPYTCH_SASL")
	fs.BoolVar(&b.tls, "tls", envBool("DISPYTCH_TLS"), "use TLS (implied by kafkas:// and amqps://); env DISPYTCH_TLS=1")
	fs.StringVar(&b.tlsCA, "tls-ca", env("DISPYTCH_TLS_CA", ""), "CA bundle `file` (PEM) to trust; env DISPYTCH_TLS_CA")
	fs.StringVar(&b.tlsCert, "tls-cert", env("DISPYTCH_TLS_CERT", ""), "client certificate `file` (PEM); env DISPYTCH_TLS_CERT")
	fs.StringVar(&b.tlsKey, "tls-key", env("DISPYTCH_TLS_KEY", ""), "client key `file` (PEM); env DISPYTCH_TLS_KEY")
	fs.StringVar(&b.tlsSNI, "tls-server-name", env("DISPYTCH_TLS_SERVER_NAME", ""), "server `name` to verify; env DISPYTCH_TLS_SERVER_NAME")
	fs.BoolVar(&b.tlsInsecure, "tls-insecure", envBool("DISPYTCH_TLS_INSECURE"), "skip certificate verification (testing only); env DISPYTCH_TLS_INSECURE=1")
	fs.StringVar(&b.exchange, "exchange", env("DISPYTCH_EXCHANGE", "dispytch"), "AMQP exchange `name`; env DISPYTCH_EXCHANGE")
	fs.DurationVar(&b.timeout, "timeout", 30*time.Second, "give up connecting or sending after this `duration`")
	return b
}

// tlsConfig builds the TLS configuration, or nil without TLS.
func (b *brokerConfig) tlsConfig(scheme string) (*tls.Config, error) {
	on := b.tls || b.tlsCA != "" || b.tlsCert != "" || b.tlsInsecure || strings.HasSuffix(scheme, "s")
	if !on {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: b.tlsSNI, InsecureSkipVerify: b.tlsInsecure} //nolint:gosec // --tls-insecure is the user's explicit choice
	if b.tlsCA != "" {
		pem, err := os.ReadFile(b.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", b.tlsCA)
		}
		cfg.RootCAs = pool
	}
	if (b.tlsCert == "") != (b.tlsKey == "") {
		return nil, usagef("--tls-cert and --tls-key go together")
	}
	if b.tlsCert != "" {
		pair, err := tls.LoadX509KeyPair(b.tlsCert, b.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// broker is what the commands need of a backend.
type broker interface {
	// producer sends messages (emit, redrive).
	producer() backend.Producer
	// store reads and edits dead letters.
	store() backend.DeadLetterStore
	// tail follows what sub matches without joining a consumer group and
	// without settling anything on a service's behalf; ready is called once
	// the subscription is in place, with what it follows.
	tail(ctx context.Context, sub *tailSub, deliver func(*backend.Delivery) error, ready func(string)) error
	close()
}

// tailSub is what tail follows.
type tailSub struct {
	patterns      []*topic.Pattern
	fromBeginning bool
}

func (s *tailSub) matches(t string) bool {
	for _, p := range s.patterns {
		if _, ok := p.Match(t); ok {
			return true
		}
	}
	return false
}

// opener connects to one kind of broker.
type opener func(ctx context.Context, u *url.URL, b *brokerConfig) (broker, error)

// openers maps URL schemes to backends.
func openers() map[string]opener {
	return map[string]opener{
		"kafka":  openKafka,
		"kafkas": openKafka,
		"amqp":   openAMQP,
		"amqps":  openAMQP,
		"redis":  openRedis,
		"rediss": openRedis,
		"nats":   openNATS,
		"tls":    openNATS,
	}
}

// open connects to the broker the configuration names.
func (b *brokerConfig) open(ctx context.Context) (broker, error) {
	if b.url == "" {
		return nil, usagef("no broker: give -b URL or set DISPYTCH_BROKER (see dispytch help brokers)")
	}
	scheme, _, ok := strings.Cut(b.url, "://")
	if !ok {
		return nil, usagef("broker %q is not a URL such as kafka://host:9092 or amqp://host:5672/", b.url)
	}
	scheme = strings.ToLower(scheme)
	open, ok := openers()[scheme]
	if !ok {
		return nil, usagef("unknown broker scheme %q (kafka, kafkas, amqp, amqps, redis, rediss, nats, tls)", scheme)
	}
	u, err := parseBrokerURL(b.url)
	if err != nil {
		return nil, usagef("broker URL: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	br, err := open(ctx, u, b)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redact(u), err)
	}
	return br, nil
}

// parseBrokerURL parses a broker URL; a Kafka URL may list several hosts
// (kafka://a:9092,b:9092), which net/url does not take.
func parseBrokerURL(s string) (*url.URL, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || scheme == "" {
		return nil, errors.New("not a URL such as kafka://host:9092")
	}
	hostEnd := strings.IndexAny(rest, "/?#")
	if hostEnd < 0 {
		hostEnd = len(rest)
	}
	authority := rest[:hostEnd]
	userinfo, hosts := "", authority
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, hosts = authority[:i+1], authority[i+1:]
	}
	if hosts == "" || strings.Contains(hosts, ",,") || strings.HasPrefix(hosts, ",") || strings.HasSuffix(hosts, ",") {
		return nil, errors.New("no host")
	}
	first, _, _ := strings.Cut(hosts, ",")
	u, err := url.Parse(scheme + "://" + userinfo + first + rest[hostEnd:])
	if err != nil {
		return nil, err
	}
	if u.Host == "" {
		return nil, errors.New("no host")
	}
	u.Host = hosts
	return u, nil
}

// redact shows a broker URL without its password.
func redact(u *url.URL) string {
	c := *u
	if c.User != nil {
		if _, has := c.User.Password(); has {
			c.User = url.UserPassword(c.User.Username(), "xxxxx")
		}
	}
	return c.String()
}
