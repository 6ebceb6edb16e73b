package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// newFlags returns a flag set for a command, whose usage text is synopsis
// and its flags.
func (c *cli) newFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {} // flag calls it on every error: the usage is printed for --help only
	c.synopsis[fs] = synopsis
	return fs
}

func (c *cli) printUsage(fs *flag.FlagSet, synopsis string, w io.Writer) {
	fmt.Fprintf(w, "%s\nFlags:\n", strings.TrimRight(synopsis, "\n")+"\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// parse parses flags and positional arguments in any order, as most
// commands' users expect (`dispytch emit topic type --key k`); "--" ends
// the flags. --help prints the usage to standard output and returns
// flag.ErrHelp; a bad flag is a usage error.
func (c *cli) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				c.printUsage(fs, c.synopsis[fs], c.stdout)
				return nil, flag.ErrHelp
			}
			return nil, usagef("%s: %v (see dispytch %s --help)", fs.Name(), err, fs.Name())
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// listFlag collects a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}
