// Command dispytch emits events, tails topics, operates dead letters and
// validates, renders and serves AsyncAPI documents, for services built with
// Dispytch for Go (and Python Dispytch services on the same brokers).
//
//	go install github.com/dispytch/dispytch-go/cmd/dispytch@latest
//
//	dispytch emit -b kafka://localhost:9092 user_events user_registered '{"user":{"id":"42"}}'
//	dispytch tail -b amqp://guest:guest@localhost:5672/ 'user.{id}.events' --type user_registered
//	dispytch dlq ls -b kafka://localhost:9092 users.dlq
//	dispytch dlq redrive -b kafka://localhost:9092 users.dlq --handler send_welcome --dry-run
//	dispytch asyncapi serve asyncapi.yaml
//
// Brokers are URLs: kafka://host:9092[,host2:9092], amqp://user:pass@host:5672/vhost
// (amqps:// for TLS), or the DISPYTCH_BROKER environment variable; run
// `dispytch help brokers` for TLS and authentication.
//
// Exit status: 0 on success, 1 when the command failed (the reason is on
// standard error), 2 for a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// cli is one run of the command: its streams and the environment.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	synopsis       map[*flag.FlagSet]string
}

// usageError is a mistake in the command line: exit 2 with the usage.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

type command struct {
	name, summary string
	run           func(ctx context.Context, c *cli, args []string) error
}

func commands() []command {
	return []command{
		{"emit", "send events to a topic", runEmit},
		{"tail", "follow topics or patterns without joining any consumer group", runTail},
		{"dlq", "list, show, redrive and purge dead letters", runDLQ},
		{"asyncapi", "validate, render and serve AsyncAPI documents", runAsyncAPI},
	}
}

const mainUsage = `dispytch emits events, tails topics, operates dead letters and serves AsyncAPI documents.

Usage:

	dispytch <command> [flags] [arguments]

Commands:
%s
Run "dispytch <command> --help" for a command's flags, "dispytch help brokers" for
broker URLs, TLS and authentication.
`

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{stdin: stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv, synopsis: map[*flag.FlagSet]string{}}
	return c.main(ctx, args)
}

func (c *cli) usage(w io.Writer) {
	var list string
	for _, cmd := range commands() {
		list += fmt.Sprintf("\t%-9s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprintf(w, mainUsage, list)
}

func (c *cli) main(ctx context.Context, args []string) int {
	if len(args) == 0 {
		c.usage(c.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && args[0] == "help" {
			if args[1] == "brokers" {
				fmt.Fprint(c.stdout, brokersHelp)
				return exitOK
			}
			return c.main(ctx, []string{args[1], "--help"})
		}
		c.usage(c.stdout)
		return exitOK
	}
	for _, cmd := range commands() {
		if cmd.name == name {
			return c.exit(cmd.run(ctx, c, args[1:]))
		}
	}
	fmt.Fprintf(c.stderr, "dispytch: unknown command %q\n\n", name)
	c.usage(c.stderr)
	return exitUsage
}

// exit turns a command's error into the exit status, writing it to
// standard error.
func (c *cli) exit(err error) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(c.stderr, "dispytch: %s\n", ue.msg)
		return exitUsage
	case errors.Is(err, errSilent):
		return exitFail
	}
	fmt.Fprintf(c.stderr, "dispytch: %v\n", err)
	return exitFail
}

// errSilent fails a command whose reasons were already written.
var errSilent = errors.New("failed")
