package dispytch

import (
	"strings"

	"github.com/go-playground/validator/v10"
)

// newValidator is the listener's default validator: go-playground's, with
// required struct fields checked, and its "email" tag answered by a fast
// path for plain addresses. The built-in tag runs net/mail.ParseAddress
// and a large regular expression; together they were a quarter of the CPU
// of handling a small event with one email field. The fast path accepts
// only addresses that both of those accept (a dot-atom local part and a
// dot-separated host name), and every other string goes to the built-in
// check, so the tag accepts exactly the same strings (fuzzed against it).
func newValidator() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	ref := validator.New()
	err := v.RegisterValidation("email", func(fl validator.FieldLevel) bool {
		s := fl.Field().String()
		return plainEmail(s) || ref.Var(s, "email") == nil
	})
	if err != nil {
		panic("dispytch: registering the email validation: " + err.Error())
	}
	return v
}

// Character classes of plainEmail.
const (
	emailAtext  = 1 << iota // RFC 5322 atext
	emailLetter             // A-Z a-z
	emailDigit              // 0-9
)

var emailClass = func() (t [256]uint8) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] |= emailAtext | emailLetter
		t[c-'a'+'A'] |= emailAtext | emailLetter
	}
	for c := '0'; c <= '9'; c++ {
		t[c] |= emailAtext | emailDigit
	}
	for _, c := range "!#$%&'*+-/=?^_`{|}~" {
		t[c] |= emailAtext
	}
	return t
}()

// plainEmail reports whether s is local@domain where local is a dot-atom
// of ASCII atext and domain is two or more dot-separated labels of ASCII
// letters, digits and inner hyphens, the last one letters only. False
// means "not this simple form", not "invalid".
func plainEmail(s string) bool {
	at := strings.IndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return false
	}
	local, domain := s[:at], s[at+1:]
	prev := byte('.')
	for i := 0; i < len(local); i++ {
		c := local[i]
		if c == '.' {
			if prev == '.' {
				return false
			}
		} else if emailClass[c]&emailAtext == 0 {
			return false
		}
		prev = c
	}
	if prev == '.' {
		return false
	}
	labels := 0
	for len(domain) > 0 {
		label := domain
		dot := strings.IndexByte(domain, '.')
		if dot >= 0 {
			label, domain = domain[:dot], domain[dot+1:]
			if len(domain) == 0 {
				return false // a trailing dot
			}
		} else {
			domain = ""
		}
		if len(label) == 0 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		last := len(domain) == 0
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case emailClass[c]&emailLetter != 0:
			case c == '-' || emailClass[c]&emailDigit != 0:
				if last {
					return false
				}
			default:
				return false
			}
		}
		labels++
	}
	return labels >= 2
}
