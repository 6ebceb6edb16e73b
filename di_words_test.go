package dispytch

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/dispytch/dispytch-go/codec"
)

// The word path calls functions through function types of the same shape.
// These tests call functions of every shape it supports, made with
// reflect.MakeFunc (which follows the declared signature exactly), and
// check every argument and result arrives intact.

type wordStringer struct{ s string }

func (w wordStringer) String() string { return w.s }

type wordBody struct {
	A int
	F float64
	S string
	B []byte
}

var (
	stringerType = reflect.TypeFor[fmt.Stringer]()
	intPtrType   = reflect.TypeFor[*int]()
)

// wordArg returns a fresh value of kind k: an *int or a fmt.Stringer.
func wordArg(k wkind, i int) reflect.Value {
	if k == wOne {
		n := i
		return reflect.ValueOf(&n)
	}
	var s fmt.Stringer = wordStringer{fmt.Sprint("s", i)}
	return reflect.ValueOf(&s).Elem()
}

func wordType(k wkind) reflect.Type {
	if k == wOne {
		return intPtrType
	}
	return stringerType
}

// sameValue compares pointers by identity and interfaces by value.
func sameValue(a, b reflect.Value) bool {
	if a.Kind() == reflect.Pointer {
		return a.Pointer() == b.Pointer()
	}
	return a.Interface() == b.Interface()
}

// kindCombos lists every sequence of n word kinds.
func kindCombos(n int) [][]wkind {
	out := [][]wkind{{}}
	for range n {
		var next [][]wkind
		for _, c := range out {
			next = append(next, append(append([]wkind{}, c...), wOne), append(append([]wkind{}, c...), wTwo))
		}
		out = next
	}
	return out
}

func TestProviderThunks(t *testing.T) {
	errProv := errors.New("provider failed")
	for n := 0; n <= 3; n++ {
		for _, ins := range kindCombos(n) {
			for _, outK := range []wkind{wOne, wTwo} {
				for _, ret := range []retShape{retT, retTErr, retTCleanupErr} {
					name := fmt.Sprint(ins, outK, ret)
					args := make([]reflect.Value, n)
					inTypes := make([]reflect.Type, n)
					words := make([]iword, n)
					for i, k := range ins {
						args[i], inTypes[i] = wordArg(k, i), wordType(k)
						words[i] = wordsOf(args[i])
					}
					result := wordArg(outK, 99)
					outTypes := []reflect.Type{wordType(outK)}
					switch ret {
					case retTErr:
						outTypes = append(outTypes, errType)
					case retTCleanupErr:
						outTypes = append(outTypes, cleanupType, errType)
					}
					cleaned := false
					fn := reflect.MakeFunc(reflect.FuncOf(inTypes, outTypes, false), func(got []reflect.Value) []reflect.Value {
						for i := range got {
							if !sameValue(got[i], args[i]) {
								t.Errorf("%s: argument %d: got %v, want %v", name, i, got[i], args[i])
							}
						}
						out := []reflect.Value{result}
						errV := reflect.ValueOf(&errProv).Elem()
						switch ret {
						case retTErr:
							out = append(out, errV)
						case retTCleanupErr:
							out = append(out, reflect.ValueOf(func() { cleaned = true }), errV)
						}
						return out
					})
					got, c, err := provThunk(ins, outK)(funcWord(fn.Interface()), words, ret)
					if got != wordsOf(result) {
						t.Errorf("%s: result words differ", name)
					}
					if (ret != retT) != (err == errProv) {
						t.Errorf("%s: error %v", name, err)
					}
					if ret == retTCleanupErr {
						if c == nil {
							t.Fatalf("%s: no cleanup", name)
						}
						cf := *reflectPointer(&c)
						cf()
						if !cleaned {
							t.Errorf("%s: cleanup did not run", name)
						}
					} else if c != nil {
						t.Errorf("%s: cleanup %v", name, c)
					}
				}
			}
		}
	}
}

func TestHandlerThunks(t *testing.T) {
	type ctxKey struct{}
	ctx := context.WithValue(context.Background(), ctxKey{}, "v")
	body := wordBody{A: 7, F: 2.5, S: "body", B: []byte("bytes")}
	errH := errors.New("handler failed")
	for n := 1; n <= 3; n++ {
		for _, deps := range kindCombos(n) {
			for _, form := range []hform{hPlain, hErr, hCtx, hCtxErr} {
				name := fmt.Sprint(deps, form)
				ev := &Event[wordBody]{Body: body}
				ev.ID, ev.Topic = "id-1", "topic-1"
				args := make([]reflect.Value, n)
				words := make([]iword, n)
				var inTypes []reflect.Type
				withCtx := form == hCtx || form == hCtxErr
				if withCtx {
					inTypes = append(inTypes, ctxType)
				}
				inTypes = append(inTypes, reflect.TypeFor[Event[wordBody]]())
				for i, k := range deps {
					args[i] = wordArg(k, i)
					words[i] = wordsOf(args[i])
					inTypes = append(inTypes, wordType(k))
				}
				var outTypes []reflect.Type
				if form == hErr || form == hCtxErr {
					outTypes = []reflect.Type{errType}
				}
				called := false
				fn := reflect.MakeFunc(reflect.FuncOf(inTypes, outTypes, false), func(got []reflect.Value) []reflect.Value {
					called = true
					if withCtx {
						if got[0].Interface().(context.Context) != ctx {
							t.Errorf("%s: wrong context", name)
						}
						got = got[1:]
					}
					e := got[0].Interface().(Event[wordBody])
					if !reflect.DeepEqual(e.Body, body) || e.ID != "id-1" || e.Topic != "topic-1" {
						t.Errorf("%s: event %+v", name, e)
					}
					for i := range args {
						if !sameValue(got[i+1], args[i]) {
							t.Errorf("%s: dependency %d: got %v, want %v", name, i, got[i+1], args[i])
						}
					}
					if len(outTypes) == 1 {
						return []reflect.Value{reflect.ValueOf(&errH).Elem()}
					}
					return nil
				})
				err := handlerThunk[wordBody](form, deps)(funcWord(fn.Interface()), ctx, ev, words)
				if !called {
					t.Fatalf("%s: handler not called", name)
				}
				if (len(outTypes) == 1) != (err == errH) {
					t.Errorf("%s: error %v", name, err)
				}
			}
		}
	}
}

func reflectPointer(p *word) *func() { return (*func())(reflect.ValueOf(p).UnsafePointer()) }

type wordSvc struct{}

// TestWordPathSelection: which handler plans take the word path.
func TestWordPathSelection(t *testing.T) {
	provs, probs := providerMap([]*Provider{
		Provide(func(context.Context) *wordSvc { return &wordSvc{} }),
		Value[fmt.Stringer](wordStringer{"x"}),
		Value(map[string]int{}),
		Value("a string"),
		Provide(func(m Metadata) []byte { return nil }),
	})
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	for _, c := range []struct {
		fn    any
		words bool
	}{
		{func(Event[wordBody], *wordSvc) {}, true},
		{func(context.Context, Event[wordBody], *wordSvc, fmt.Stringer, map[string]int) error { return nil }, true},
		{func(Event[wordBody], string) {}, false},                                 // a string dependency
		{func(Event[wordBody], []byte) {}, false},                                 // from a provider taking Metadata
		{func(*wordSvc, Event[wordBody]) {}, false},                               // the event after a dependency
		{func(Event[wordBody], *wordSvc, *wordSvc, *wordSvc, *wordSvc) {}, false}, // four dependencies
		{func(Event[wordBody]) error { return nil }, false},                       // the direct path instead
	} {
		p, _, probs := compileHandler(reflect.ValueOf(c.fn), "h", nil, provs, map[*Provider]*constSlot{})
		if len(probs) > 0 {
			t.Fatal(probs)
		}
		if got := p.hcall != nil; got != c.words {
			t.Errorf("%T: word path %v, want %v", c.fn, got, c.words)
		}
	}
}

type wordClock func() int

// Every pointer-like kind (pointer, map, channel, func) and an interface,
// from values, singletons-to-be and providers, reach the handler intact on
// the word path, and a provider's cleanup runs.
func TestWordPathKinds(t *testing.T) {
	m := map[string]int{"k": 7}
	ch := make(chan int, 1)
	cleaned := false
	provs, probs := providerMap([]*Provider{
		Value(m),
		Value(ch),
		Value[wordClock](func() int { return 42 }),
		Provide(func(ctx context.Context, c wordClock) (fmt.Stringer, func(), error) {
			return wordStringer{fmt.Sprint(c())}, func() { cleaned = true }, nil
		}),
	})
	if len(probs) > 0 {
		t.Fatal(probs)
	}
	var got string
	h := func(ctx context.Context, ev Event[wordBody], mm map[string]int, c chan int, s fmt.Stringer) error {
		c <- mm["k"]
		got = fmt.Sprintf("%d %d %s %v", ev.Body.A, <-c, s.String(), ctx.Value(ctxKey{}))
		return nil
	}
	p, _, probs := compileHandler(reflect.ValueOf(h), "h", nil, provs, map[*Provider]*constSlot{})
	if len(probs) > 0 || p.hcall == nil {
		t.Fatalf("word path not taken: %v", probs)
	}
	meta := &Metadata{ID: "i", Type: "t"}
	ctx := context.WithValue(context.Background(), ctxKey{}, "v")
	if _, err := p.run(ctx, attempt{meta: meta, body: []byte(`{"A":3}`), codec: codec.JSON, v: newValidator()}); err != nil {
		t.Fatal(err)
	}
	if got != "3 7 42 v" || !cleaned {
		t.Fatalf("got %q, cleaned %v", got, cleaned)
	}
}

type ctxKey struct{}
