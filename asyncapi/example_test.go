package asyncapi_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/asyncapi"
	"github.com/dispytch/dispytch-go/memory"
)

// Note is an example event body.
type Note struct {
	UserID  int    `json:"user_id" validate:"gt=0"`
	Message string `json:"message" validate:"required,max=140"`
}

// NoteTarget binds the topic's segment.
type NoteTarget struct {
	UserID int `segment:"user_id" validate:"gt=0"`
}

func noteDocument() *asyncapi.Document {
	l := dispytch.NewListener(memory.New(), dispytch.ConsumerGroup("notifier"))
	l.Handle("user.{user_id}.notification", "user_notification",
		func(ev dispytch.Event[Note], seg dispytch.Segments[NoteTarget]) error { return nil },
		dispytch.Name("mailer"))
	doc, err := asyncapi.Build(asyncapi.Info{Title: "notifier", Version: "1.0.0"},
		asyncapi.Listener(l), asyncapi.Server("kafka", "kafka://localhost:9092"), asyncapi.DeadLetters(false))
	if err != nil {
		panic(err)
	}
	return doc
}

// The channel of a pattern handler: its address, its typed parameter, its
// message and the Kafka binding.
func Example() {
	y, err := noteDocument().YAML()
	if err != nil {
		panic(err)
	}
	s := string(y)
	fmt.Print(s[strings.Index(s, "channels:"):strings.Index(s, "operations:")])
	// Output:
	// channels:
	//   user.user_id.notification:
	//     address: user.{user_id}.notification
	//     description: Topics matching the pattern `user.{user_id}.notification`. Kafka subscribes with the regular expression `^user\.(?:[^\.]*)\.notification$`; RabbitMQ binds `user.*.notification`.
	//     parameters:
	//       user_id:
	//         description: 'one topic segment, bound to NoteTarget.UserID: integer, > 0'
	//         x-dispytch-schema:
	//           type: integer
	//           exclusiveMinimum: 0
	//     messages:
	//       user_notification:
	//         $ref: '#/components/messages/user_notification'
	//     bindings:
	//       kafka:
	//         x-dispytch-regex: ^user\.(?:[^\.]*)\.notification$
	//         bindingVersion: 0.5.0
}

// Serving the document next to the service's other endpoints.
func ExampleHandler() {
	mux := http.NewServeMux()
	mux.Handle("/asyncapi/", asyncapi.Handler(noteDocument()))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, path := range []string{"/asyncapi/", "/asyncapi/asyncapi.json", "/asyncapi/asyncapi.yaml"} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			panic(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		fmt.Println(path, res.StatusCode, res.Header.Get("Content-Type"))
	}
	// Output:
	// /asyncapi/ 200 text/html; charset=utf-8
	// /asyncapi/asyncapi.json 200 application/json
	// /asyncapi/asyncapi.yaml 200 application/yaml
}
