package asyncapi_test

import (
	"context"
	"encoding/json"
	"time"

	"github.com/dispytch/dispytch-go"
	"github.com/dispytch/dispytch-go/asyncapi"
	"github.com/dispytch/dispytch-go/memory"
)

// The services the tests describe: the README's quickstart, the dynamic
// example, and a shop with patterns, several event types per channel and
// nested bodies.

// User is the quickstart's user.
type User struct {
	ID    string `json:"id" validate:"required"`
	Email string `json:"email" validate:"required,email"`
	Name  string `json:"name"`
}

// UserRegistered is the quickstart's event.
type UserRegistered struct {
	User      User  `json:"user" validate:"required"`
	Timestamp int64 `json:"timestamp"`
}

func (UserRegistered) Topic() string     { return "user_events" }
func (UserRegistered) EventType() string { return "user_registered" }

// UserService is a handler's dependency.
type UserService struct{}

var testInfo = asyncapi.Info{
	Title:       "users",
	Version:     "1.2.0",
	Description: "Registers users and tells them.",
	Contact:     &asyncapi.Contact{Name: "Users team", URL: "https://example.com/users", Email: "users@example.com"},
	License:     &asyncapi.License{Name: "Apache-2.0", URL: "https://www.apache.org/licenses/LICENSE-2.0"},
}

func quickstartListener() *dispytch.Listener {
	broker := memory.New()
	group := dispytch.NewHandlerGroup("", "")
	group.Handle("user_events", "user_registered",
		func(ctx context.Context, ev dispytch.Event[UserRegistered], svc *UserService) error { return nil },
		dispytch.Retries(3), dispytch.RetryInterval(time.Second), dispytch.Name("welcome"))
	l := dispytch.NewListener(broker, dispytch.ConsumerGroup("quickstart"),
		dispytch.Provide(func() *UserService { return &UserService{} }))
	l.AddGroup(group)
	return l
}

// UserNotification is the dynamic example's event, on a per-user topic.
type UserNotification struct {
	UserID  int    `json:"user_id" validate:"gt=0"`
	Message string `json:"message" validate:"required"`
}

func (UserNotification) Topic() string     { return "user.{user_id}.notification" }
func (UserNotification) EventType() string { return "user_notification" }

// Target is the dynamic example's segments.
type Target struct {
	UserID int `segment:"user_id" validate:"gt=0"`
}

func dynamicService() (*dispytch.Listener, *dispytch.Emitter) {
	broker := memory.New()
	l := dispytch.NewListener(broker, dispytch.ConsumerGroup("notifier"))
	l.Handle("user.{user_id}.notification", "user_notification",
		func(ev dispytch.Event[UserNotification], seg dispytch.Segments[Target]) error { return nil },
		dispytch.Name("mailer"), dispytch.Retries(2))
	e := dispytch.NewEmitter(broker)
	e.Declare(UserNotification{})
	return l, e
}

// The shop's bodies: nested, recursive, with maps, times and validation.

type Address struct {
	Street  string `json:"street" validate:"required"`
	City    string `json:"city" validate:"required"`
	Country string `json:"country" validate:"required,len=2,uppercase"`
}

type Customer struct {
	ID      string   `json:"id" validate:"required,uuid4"`
	Email   string   `json:"email" validate:"required,email"`
	Address *Address `json:"address,omitempty"`
}

type Product struct {
	SKU      string    `json:"sku" validate:"required,alphanum,min=3,max=32"`
	Category *Category `json:"category,omitempty"`
}

// Category is recursive: a tree.
type Category struct {
	Name   string    `json:"name"`
	Parent *Category `json:"parent,omitempty"`
}

type Item struct {
	Product  Product `json:"product" validate:"required"`
	Quantity int     `json:"quantity" validate:"gte=1,lte=100"`
	Price    float64 `json:"price" validate:"gt=0"`
}

type OrderCreated struct {
	OrderID  string            `json:"order_id" validate:"required"`
	Region   string            `json:"region" validate:"oneof=eu us apac"`
	Customer Customer          `json:"customer" validate:"required"`
	Items    []Item            `json:"items" validate:"required,min=1,dive"`
	Tags     []string          `json:"tags,omitempty" validate:"dive,lowercase"`
	Meta     map[string]string `json:"meta,omitempty"`
	At       time.Time         `json:"at"`
	Internal string            `json:"-"`
}

func (OrderCreated) Topic() string     { return "orders.{region}.{order_id}" }
func (OrderCreated) EventType() string { return "order_created" }

type OrderPaid struct {
	OrderID string `json:"order_id" validate:"required"`
	Region  string `json:"region" validate:"oneof=eu us apac"`
	Amount  int64  `json:"amount,string"`
}

func (OrderPaid) Topic() string     { return "orders.{region}.{order_id}" }
func (OrderPaid) EventType() string { return "order_paid" }

type OrderCancelled struct {
	OrderID string `json:"order_id" validate:"required"`
	Region  string `json:"region" validate:"oneof=eu us apac"`
	Reason  string `json:"reason"`
}

func (OrderCancelled) Topic() string     { return "orders.{region}.{order_id}" }
func (OrderCancelled) EventType() string { return "order_cancelled" }

type OrderSegments struct {
	Region  string `segment:"region" validate:"oneof=eu us apac"`
	OrderID string
}

type AuditEntry struct {
	Actor  string          `json:"actor"`
	Action string          `json:"action"`
	Detail json.RawMessage `json:"detail"`
}

type StockChanged struct {
	SKU   string `json:"sku"`
	Delta int32  `json:"delta"`
}

func (StockChanged) Topic() string     { return "stock" }
func (StockChanged) EventType() string { return "stock_changed" }

func shopService() (*dispytch.Listener, *dispytch.Emitter) {
	broker := memory.New()
	l := dispytch.NewListener(broker, dispytch.ConsumerGroup("shop"))
	orders := dispytch.NewHandlerGroup("orders.{region}.{order_id}", "")
	orders.Handle("", "order_created", func(ev dispytch.Event[OrderCreated], seg dispytch.Segments[OrderSegments]) error { return nil },
		dispytch.Name("reserve_stock"), dispytch.Retries(5))
	orders.Handle("", "order_paid", func(ev dispytch.Event[OrderPaid]) error { return nil }, dispytch.Name("ship"))
	orders.Handle("", "order_cancelled", func(ev dispytch.Event[OrderCancelled]) error { return nil },
		dispytch.Name("release_stock"), dispytch.OnFailure(dispytch.PolicyRedeliver))
	l.AddGroup(orders)
	// Two handlers of one type: one message.
	l.Handle("orders.{region}.{order_id}", "order_created", func(ev dispytch.Event[json.RawMessage]) {}, dispytch.Name("archive"))
	l.Handle("audit.{path...}", "audit_entry", func(ev dispytch.Event[AuditEntry]) {}, dispytch.Name("audit"))
	l.Handle("stock.*.changes", "stock_changed", func(ev dispytch.Event[StockChanged]) {}, dispytch.Name("stock_watch"))
	l.Handle("stock", "stock_changed", func(ev dispytch.Event[StockChanged]) {}, dispytch.Name("stock_mirror"))
	e := dispytch.NewEmitter(broker)
	e.Declare(OrderCreated{}, OrderPaid{}, OrderCancelled{}, StockChanged{})
	return l, e
}
