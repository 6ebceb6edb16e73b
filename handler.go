package dispytch

import (
	"context"
	"fmt"
	"reflect"
	"runtime"
	"strings"

	"github.com/dispytch/dispytch-go/topic"
)

// HandlerGroup collects handlers, optionally with a default topic and event
// type, to add to a listener with Listener.AddGroup.
type HandlerGroup struct {
	topic, eventType string
	settings         []HandlerOption
	specs            []*handlerSpec
}

// NewHandlerGroup returns an empty group. Its handlers registered with an
// empty topic or event type take topic and eventType ("" for none, as
// Python Dispytch's default_topic and default_event); opts are the defaults
// of its handlers (Retries, OnFailure, ...), which their own options
// override.
func NewHandlerGroup(topic, eventType string, opts ...HandlerOption) *HandlerGroup {
	return &HandlerGroup{topic: topic, eventType: eventType, settings: opts}
}

// Handle registers fn for eventType on topic. An empty topic or event type
// takes the group's default. topic may be a pattern ("user.{id}.events").
//
// fn takes, in any order, a context.Context, one Event[T], Metadata,
// Segments[S], a *slog.Logger (the listener's, with the message's id, type,
// topic, group and handler, unless a provider supplies *slog.Logger) and
// types supplied by providers, and returns error or nothing.
// Its dependencies are checked when the listener runs.
//
// Handle panics when fn is not a function, or when the topic is not a valid
// pattern or is missing with no default: these are programming errors, as
// with net/http's ServeMux.
func (g *HandlerGroup) Handle(topic, eventType string, fn any, opts ...HandlerOption) {
	if topic == "" {
		topic = g.topic
	}
	if eventType == "" {
		eventType = g.eventType
	}
	spec := newHandlerSpec(topic, eventType, fn, opts)
	spec.group = g.settings
	g.specs = append(g.specs, spec)
}

// handlerSpec is a handler as registered.
type handlerSpec struct {
	topic, eventType string
	fnAny            any           // as registered (a typedHandler for Handle1..3)
	fn               reflect.Value // the handler function
	loc              string        // file:line of the function
	fname            string        // the function's name
	regAt            string        // file:line of the Handle call
	opts             []HandlerOption
	group            []HandlerOption
}

func newHandlerSpec(topicName, eventType string, fn any, opts []HandlerOption) *handlerSpec {
	skip := 2 // the caller of Handle
	if _, ok := fn.(typedHandler); ok {
		skip++ // the caller of Handle1..3
	}
	_, file, line, _ := runtime.Caller(skip)
	regAt := fmt.Sprintf("%s:%d", shortFile(file), line)
	if topicName == "" {
		panic(fmt.Sprintf("dispytch: Handle at %s: no topic and no group default", regAt))
	}
	if eventType == "" {
		panic(fmt.Sprintf("dispytch: Handle at %s: no event type and no group default", regAt))
	}
	if err := topic.Check(topicName); err != nil {
		panic(fmt.Sprintf("dispytch: Handle at %s: %v", regAt, err))
	}
	inner := fn
	if th, ok := fn.(typedHandler); ok {
		inner = th.handlerFunc()
	}
	v := reflect.ValueOf(inner)
	if inner == nil || v.Kind() != reflect.Func || v.IsNil() {
		panic(fmt.Sprintf("dispytch: Handle at %s: handler is %T, not a function", regAt, fn))
	}
	name, loc := funcInfo(v)
	return &handlerSpec{topic: topicName, eventType: eventType, fnAny: fn, fn: v, loc: loc, fname: name, regAt: regAt, opts: opts}
}

func funcInfo(v reflect.Value) (name, loc string) {
	f := runtime.FuncForPC(v.Pointer())
	if f == nil {
		return "unknown", "unknown"
	}
	file, line := f.FileLine(f.Entry())
	return f.Name(), fmt.Sprintf("%s:%d", shortFile(file), line)
}

func shortFile(file string) string {
	if i := strings.LastIndexByte(file, '/'); i >= 0 {
		if j := strings.LastIndexByte(file[:i], '/'); j >= 0 {
			return file[j+1:]
		}
	}
	return file
}

// HandlerInfo describes a registered handler to middleware, observers and
// tools (Listener.Handlers).
type HandlerInfo struct {
	// Name is the handler's name: the Name option, or the function's name.
	Name string
	// Topic is the topic or pattern the handler was registered for.
	Topic string
	// EventType is the event type it handles.
	EventType string
	// Location is the function's file:line.
	Location string
	// Retries is the number of retries the handler is configured with.
	Retries int
	// Policy is the handler's failure policy.
	Policy FailurePolicy
	// Body is T of the handler's Event[T] parameter, nil when it takes
	// none; Segments is S of its Segments[S] parameter, or nil.
	Body, Segments reflect.Type
}

// Call is one handler attempt, as middleware sees it.
type Call struct {
	Handler *HandlerInfo
	// Meta is the event's metadata; Meta.Delivery.Attempt is the attempt.
	Meta *Metadata
	// Body is the raw encoded body.
	Body []byte

	a attempt
}

// HandlerFunc runs one handler attempt: resolving its dependencies and
// calling it. Middleware wraps it.
type HandlerFunc func(ctx context.Context, c *Call) error

// Middleware wraps every handler attempt. It may change the context given to
// next (its values reach providers and the handler), inspect the call, and
// turn errors into other errors (Permanent, say).
type Middleware func(next HandlerFunc) HandlerFunc
