package redis

import (
	"strings"

	"github.com/dispytch/dispytch-go/topic"
)

// Glob translates a topic pattern into a Redis glob (for SCAN MATCH and
// PSUBSCRIBE): literal segments escaped, every wildcard ({name}, * and
// {rest...}) a *. A glob's * matches across delimiters, so the glob
// matches more than the pattern ("user.*.created" matches
// "user.1.2.created", which "user.{id}.created" does not); the backend
// checks every match against the pattern itself.
func Glob(p *topic.Pattern) string {
	var b strings.Builder
	for i, s := range p.Segments() {
		if i > 0 {
			b.WriteString(globEscape(p.Delimiter()))
		}
		if s.Kind == topic.KindLiteral {
			b.WriteString(globEscape(s.Value))
		} else {
			b.WriteByte('*')
		}
	}
	return b.String()
}

func globEscape(s string) string {
	if !strings.ContainsAny(s, `*?[]\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// slot is a key's Redis Cluster hash slot: CRC16 (XMODEM) of the key, or
// of its {hash tag}, modulo 16384.
func slot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc % 16384)
}
