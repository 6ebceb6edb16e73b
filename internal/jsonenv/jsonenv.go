// Package jsonenv is the JSON envelope scanner and writer behind the JSON
// codec: {"id","type","body","timestamp"} decoded in one pass, with a fast
// path for the layout the codec writes itself.
package jsonenv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// Envelope holds an envelope's fields. Its layout is that of
// codec.Envelope, which converts to it.
type Envelope struct {
	ID        string
	Type      string
	Body      []byte
	Timestamp int64
}

// Append appends the envelope with the encoded body to dst.
func Append(dst []byte, id, typ string, body []byte, ts int64) []byte {
	dst = append(dst, `{"id":`...)
	dst = AppendString(dst, id)
	dst = append(dst, `,"type":`...)
	dst = AppendString(dst, typ)
	dst = append(dst, `,"body":`...)
	dst = append(dst, body...)
	dst = append(dst, `,"timestamp":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	return append(dst, '}')
}

// AppendString appends s as a JSON string, exactly as json.Marshal writes
// it.
func AppendString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !plainByte[s[i]] {
			b, _ := json.Marshal(s) // a Go string always marshals
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// Decode decodes the envelope data into e: it scans the top-level object
// once, without building a map, and leaves the body as a sub-slice of data.
// Everything but the body is validated here; the body is only delimited.
// When types holds the event type, its string is reused instead of
// allocating one.
func Decode(data []byte, e *Envelope, types map[string]string) error {
	if !utf8.Valid(data) {
		return errors.New("payload is not valid UTF-8")
	}
	if canonicalEnvelope(data, e, types) {
		return nil
	}
	return scanEnvelope(data, e, types)
}

// scanEnvelope is decodeEnvelope for any layout.
func scanEnvelope(data []byte, e *Envelope, types map[string]string) error {
	s := scanner{data: data}
	s.ws()
	if !s.eat('{') {
		return s.fail("expected an object")
	}
	const (
		hasID = 1 << iota
		hasType
		hasBody
		hasTS
	)
	var have int
	s.ws()
	if s.eat('}') {
		return missingKeys(have)
	}
	for {
		s.ws()
		key, ok := s.str()
		if !ok {
			return s.fail("expected a key")
		}
		s.ws()
		if !s.eat(':') {
			return s.fail("expected ':'")
		}
		s.ws()
		start := s.i
		isNull := s.peekNull()
		var err error
		if string(key) == "body" {
			// The body is validated when it is decoded; here it is only
			// delimited, which is several times cheaper.
			err = s.skipFast()
		} else {
			err = s.skip(0)
		}
		if err != nil {
			return err
		}
		val := data[start:s.i]
		switch string(key) {
		case "id", "type":
			if isNull {
				break
			}
			if string(key) == "type" && len(val) >= 2 && val[0] == '"' {
				if t, ok := types[string(val[1:len(val)-1])]; ok {
					e.Type, have = t, have|hasType
					break
				}
			}
			str, err := decodeJSONString(val)
			if err != nil {
				return fmt.Errorf("envelope %q: %w", key, err)
			}
			if string(key) == "id" {
				e.ID, have = str, have|hasID
			} else {
				e.Type, have = str, have|hasType
			}
		case "body":
			if !isNull {
				e.Body, have = val, have|hasBody
			}
		case "timestamp":
			if isNull {
				break
			}
			ts, err := parseTimestamp(val)
			if err != nil {
				return err
			}
			e.Timestamp, have = ts, have|hasTS
		}
		s.ws()
		if s.eat(',') {
			continue
		}
		if s.eat('}') {
			break
		}
		return s.fail("expected ',' or '}'")
	}
	s.ws()
	if s.i != len(data) {
		return s.fail("trailing data after envelope")
	}
	if have != hasID|hasType|hasBody|hasTS {
		return missingKeys(have)
	}
	return nil
}

// canonicalEnvelope decodes data when it is laid out exactly as the JSON
// codec writes envelopes, {"id":"…","type":"…","body":…,"timestamp":…},
// with id and type free of escapes, the body an object or array, and an
// integer timestamp; it reports false for anything else, and the general
// scan decides. It checks what the general scan checks (the caller already
// validated UTF-8): only the layout is fixed.
func canonicalEnvelope(data []byte, e *Envelope, types map[string]string) bool {
	const (
		pID   = `{"id":"`
		pType = `","type":"`
		pBody = `","body":`
		pTS   = `,"timestamp":`
	)
	rest, ok := bytes.CutPrefix(data, []byte(pID))
	if !ok {
		return false
	}
	id, rest, ok := plainJSONString(rest)
	if !ok {
		return false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(pType[1:])); !ok {
		return false
	}
	typ, rest, ok := plainJSONString(rest)
	if !ok {
		return false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(pBody[1:])); !ok || len(rest) == 0 || (rest[0] != '{' && rest[0] != '[') {
		return false
	}
	s := scanner{data: rest}
	if s.skipFast() != nil {
		return false
	}
	body := rest[:s.i]
	if rest, ok = bytes.CutPrefix(rest[s.i:], []byte(pTS)); !ok || len(rest) < 2 || rest[len(rest)-1] != '}' {
		return false
	}
	ts, ok := plainInt(rest[:len(rest)-1])
	if !ok {
		return false
	}
	e.Body, e.Timestamp = body, ts
	if t, ok := types[string(typ)]; ok {
		e.Type = t
	} else {
		e.Type = string(typ)
	}
	e.ID = string(id)
	return true
}

// plainJSONString scans the rest of a JSON string, after its opening
// quote, that has no escapes or control characters; it returns the
// contents and what follows the closing quote.
func plainJSONString(b []byte) (str, rest []byte, ok bool) {
	for i, c := range b {
		if strSpecial[c] {
			if c != '"' {
				return nil, nil, false
			}
			return b[:i], b[i+1:], true
		}
	}
	return nil, nil, false
}

func missingKeys(have int) error {
	var miss []string
	for i, k := range []string{"id", "type", "body", "timestamp"} {
		if have&(1<<i) == 0 {
			miss = append(miss, k)
		}
	}
	return fmt.Errorf("envelope is missing %q (or it is null)", miss)
}

func decodeJSONString(val []byte) (string, error) {
	if len(val) < 2 || val[0] != '"' {
		return "", errors.New("not a string")
	}
	inner := val[1 : len(val)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner), nil
	}
	var str string
	err := json.Unmarshal(val, &str)
	return str, err
}

// plainInt parses a JSON integer of 1 to 18 digits without sign or leading
// zero (so it cannot overflow), without strconv's string conversion.
func plainInt(b []byte) (int64, bool) {
	if n := len(b); n == 0 || n > 18 || b[0] == '0' && n > 1 {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}

func parseTimestamp(val []byte) (int64, error) {
	if ts, ok := plainInt(val); ok {
		return ts, nil
	}
	if ts, err := strconv.ParseInt(string(val), 10, 64); err == nil {
		return ts, nil
	}
	f, err := strconv.ParseFloat(string(val), 64)
	if err != nil || math.IsNaN(f) || f > math.MaxInt64 || f < math.MinInt64 {
		return 0, fmt.Errorf("envelope timestamp %.40q is not a number of milliseconds", val)
	}
	return int64(f), nil
}

// scanner validates and skips JSON values. It accepts exactly RFC 8259 JSON.
type scanner struct {
	data []byte
	i    int
}

const maxDepth = 1000

func (s *scanner) fail(msg string) error {
	return fmt.Errorf("invalid JSON at byte %d: %s", s.i, msg)
}

func (s *scanner) ws() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.data) && s.data[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) peekNull() bool { return bytes.HasPrefix(s.data[s.i:], []byte("null")) }

// str scans a string and returns its raw contents without the quotes.
func (s *scanner) str() ([]byte, bool) {
	start := s.i
	if !s.eat('"') {
		return nil, false
	}
	for s.i < len(s.data) {
		c := s.data[s.i]
		if !strSpecial[c] {
			s.i++
			continue
		}
		switch {
		case c == '"':
			s.i++
			return s.data[start+1 : s.i-1], true
		case c == '\\':
			s.i++
			if s.i >= len(s.data) {
				return nil, false
			}
			switch s.data[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				if s.i+5 > len(s.data) {
					return nil, false
				}
				for _, h := range s.data[s.i+1 : s.i+5] {
					if !isHex(h) {
						return nil, false
					}
				}
				s.i += 5
			default:
				return nil, false
			}
		case c < 0x20:
			return nil, false
		default:
			s.i++
		}
	}
	return nil, false
}

// plainByte marks the bytes json.Marshal writes into a string as they are:
// printable ASCII but the quote, the backslash and HTML's <, > and &.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = true
	}
	t['"'], t['\\'], t['<'], t['>'], t['&'] = false, false, false, false, false
	return t
}()

// strSpecial marks the bytes a JSON string scan must stop at.
var strSpecial = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func (s *scanner) lit(l string) bool {
	if bytes.HasPrefix(s.data[s.i:], []byte(l)) {
		s.i += len(l)
		return true
	}
	return false
}

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.data) && s.data[s.i] >= '0' && s.data[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

func (s *scanner) num() bool {
	s.eat('-')
	if s.eat('0') {
		// no leading zeros
	} else if s.digits() == 0 {
		return false
	}
	if s.eat('.') && s.digits() == 0 {
		return false
	}
	if s.i < len(s.data) && (s.data[s.i] == 'e' || s.data[s.i] == 'E') {
		s.i++
		if !s.eat('+') {
			s.eat('-')
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}

// skipFast delimits one object or array by matching brackets outside
// strings, without validating what is inside; other values get skip.
func (s *scanner) skipFast() error {
	if s.i >= len(s.data) || (s.data[s.i] != '{' && s.data[s.i] != '[') {
		return s.skip(0)
	}
	depth := 0
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				s.i++
				return nil
			}
		case '"':
			// Jump to the next quote not escaped by an odd run of
			// backslashes (IndexByte is vectorised).
			j := s.i + 1
			for {
				k := bytes.IndexByte(s.data[j:], '"')
				if k < 0 {
					s.i = len(s.data)
					return s.fail("unterminated string")
				}
				j += k
				bs := 0
				for b := j - 1; b > s.i && s.data[b] == '\\'; b-- {
					bs++
				}
				if bs%2 == 0 {
					break
				}
				j++
			}
			s.i = j
		}
		s.i++
	}
	return s.fail("unexpected end")
}

// skip scans one value.
func (s *scanner) skip(depth int) error {
	if depth > maxDepth {
		return s.fail("nested too deeply")
	}
	if s.i >= len(s.data) {
		return s.fail("unexpected end")
	}
	switch c := s.data[s.i]; {
	case c == '"':
		if _, ok := s.str(); !ok {
			return s.fail("bad string")
		}
	case c == '{' || c == '[':
		obj, closing := c == '{', byte(']')
		if obj {
			closing = '}'
		}
		s.i++
		s.ws()
		if s.eat(closing) {
			return nil
		}
		for {
			s.ws()
			if obj {
				if _, ok := s.str(); !ok {
					return s.fail("expected a key")
				}
				s.ws()
				if !s.eat(':') {
					return s.fail("expected ':'")
				}
				s.ws()
			}
			if err := s.skip(depth + 1); err != nil {
				return err
			}
			s.ws()
			if s.eat(',') {
				continue
			}
			if s.eat(closing) {
				return nil
			}
			return s.fail("expected ',' or '" + string(closing) + "'")
		}
	case c == 't':
		if !s.lit("true") {
			return s.fail("bad literal")
		}
	case c == 'f':
		if !s.lit("false") {
			return s.fail("bad literal")
		}
	case c == 'n':
		if !s.lit("null") {
			return s.fail("bad literal")
		}
	case c == '-' || c >= '0' && c <= '9':
		if !s.num() {
			return s.fail("bad number")
		}
	default:
		return s.fail("unexpected character")
	}
	return nil
}

// AppendInt appends n in decimal.
func AppendInt(dst []byte, n int64) []byte { return strconv.AppendInt(dst, n, 10) }
