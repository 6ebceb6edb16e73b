package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/dispytch/dispytch-go/asyncapi"
)

const asyncapiUsage = `Usage: dispytch asyncapi validate|render|serve [flags] FILE

Works on AsyncAPI 3.0 documents (JSON or YAML), such as those a service
makes with package asyncapi:

	dispytch asyncapi validate FILE...            check structure and references
	dispytch asyncapi render [--format html] FILE  write it as html, json or yaml
	dispytch asyncapi serve [--addr :8080] FILE    serve the HTML view, asyncapi.json and asyncapi.yaml
`

func runAsyncAPI(ctx context.Context, c *cli, args []string) error {
	if len(args) == 0 {
		return usagef("asyncapi needs validate, render or serve (see dispytch asyncapi --help)")
	}
	switch args[0] {
	case "validate":
		return asyncapiValidate(c, args[1:])
	case "render":
		return asyncapiRender(c, args[1:])
	case "serve":
		return asyncapiServe(ctx, c, args[1:])
	case "-h", "-help", "--help", "help":
		fmt.Fprint(c.stdout, asyncapiUsage)
		return flag.ErrHelp
	}
	return usagef("asyncapi %q: validate, render or serve", args[0])
}

func readDocument(path string) (*asyncapi.Document, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	doc, err := asyncapi.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return doc, nil
}

func asyncapiValidate(c *cli, args []string) error {
	fs := c.newFlags("asyncapi validate", "Usage: dispytch asyncapi validate FILE...\n\nChecks each document: the version, the fields and their types, channel parameters,\noperations and their messages, and that every reference resolves.\n")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("asyncapi validate takes at least one FILE")
	}
	bad := 0
	for _, path := range pos {
		doc, err := readDocument(path)
		if err == nil {
			err = doc.Validate()
		}
		var ve *asyncapi.ValidationError
		switch {
		case err == nil:
			fmt.Fprintf(c.stdout, "%s: valid AsyncAPI %s\n", path, asyncapi.Version)
		case errors.As(err, &ve):
			bad++
			fmt.Fprintf(c.stderr, "%s: %d problem%s:\n", path, len(ve.Problems), plural(len(ve.Problems)))
			for _, p := range ve.Problems {
				fmt.Fprintf(c.stderr, "  %s: %s\n", p.Path, p.Message)
			}
		default:
			bad++
			fmt.Fprintf(c.stderr, "%v\n", err)
		}
	}
	if bad > 0 {
		return errSilent
	}
	return nil
}

func asyncapiRender(c *cli, args []string) error {
	fs := c.newFlags("asyncapi render", "Usage: dispytch asyncapi render [flags] FILE\n\nWrites the document as an HTML page (the view asyncapi serve shows), JSON or YAML.\n")
	format := fs.String("format", "html", "output `format`: html, json or yaml")
	out := fs.String("o", "", "write to this `file` instead of standard output")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("asyncapi render takes one FILE")
	}
	doc, err := readDocument(pos[0])
	if err != nil {
		return err
	}
	var data []byte
	switch *format {
	case "json":
		data, err = doc.JSON()
	case "yaml":
		data, err = doc.YAML()
	case "html":
		var b strings.Builder
		err = doc.HTML(&b)
		data = []byte(b.String())
	default:
		return usagef("asyncapi render --format %q: html, json or yaml", *format)
	}
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = c.stdout.Write(data)
		return err
	}
	return os.WriteFile(*out, data, 0o644)
}

func asyncapiServe(ctx context.Context, c *cli, args []string) error {
	fs := c.newFlags("asyncapi serve", "Usage: dispytch asyncapi serve [flags] FILE\n\nServes the document's HTML view at /, and /asyncapi.json and /asyncapi.yaml, until interrupted.\n")
	addr := fs.String("addr", "127.0.0.1:8080", "listen on this `address`")
	pos, err := c.parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("asyncapi serve takes one FILE")
	}
	doc, err := readDocument(pos[0])
	if err != nil {
		return err
	}
	if err := doc.Validate(); err != nil {
		fmt.Fprintf(c.stderr, "dispytch: warning: %v\n", err)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: asyncapi.Handler(doc), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(c.stderr, "dispytch: serving %s at http://%s/ (Ctrl-C to stop)\n", doc.Title(), ln.Addr())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shut)
}
