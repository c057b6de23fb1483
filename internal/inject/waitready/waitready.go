// Package waitready blocks until an HTTP endpoint answers 200. It is the postStart hook of a
// classic (pre-1.29) sidecar: the kubelet does not start the next container until the hook
// returns, so waiting on the sidecar's /startupz holds the app until the sidecar can serve it.
// The images have no shell, so this lives in a binary as the "wait" subcommand.
package waitready

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/pflag"
)

// Options for Wait.
type Options struct {
	URL      string
	Interval time.Duration // between attempts; default 200ms
	Client   *http.Client  // default: a client with a 2s timeout per attempt
}

// Wait polls URL until it answers 200 or ctx ends; the error then names the last failure.
func Wait(ctx context.Context, o Options) error {
	if o.Interval <= 0 {
		o.Interval = 200 * time.Millisecond
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 2 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.URL, nil)
	if err != nil {
		return fmt.Errorf("wait: %w", err)
	}
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	var last error
	for {
		resp, err := o.Client.Do(req)
		if err != nil && ctx.Err() != nil && last != nil {
			// The deadline cut this attempt short; the previous answer says more.
			return fmt.Errorf("wait: %s not ready before the deadline: %w", o.URL, errors.Join(ctx.Err(), last))
		}
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s answered %s", o.URL, resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait: %s not ready before the deadline: %w", o.URL, errors.Join(ctx.Err(), last))
		case <-t.C:
		}
	}
}

// Flags are the "wait" subcommand's flags.
type Flags struct {
	URL               string
	Timeout, Interval time.Duration
}

// NewFlagSet registers the "wait" flags, writing into f; the docs' flag table is checked
// against it.
func NewFlagSet(f *Flags) *pflag.FlagSet {
	fs := pflag.NewFlagSet("wait", pflag.ContinueOnError)
	fs.StringVar(&f.URL, "url", "http://127.0.0.1:9090/startupz", "endpoint that answers 200 when ready")
	fs.DurationVar(&f.Timeout, "timeout", 60*time.Second, "give up after this long")
	fs.DurationVar(&f.Interval, "interval", 200*time.Millisecond, "time between attempts")
	return fs
}

// Main runs the "wait" subcommand: wait --url URL [--timeout 60s] [--interval 200ms].
// It returns the process exit code (0 ready, 1 not ready in time, 2 usage).
func Main(ctx context.Context, args []string, stderr io.Writer) int {
	var f Flags
	fs := NewFlagSet(&f)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if err != pflag.ErrHelp {
			fmt.Fprintln(stderr, "wait:", err) // pflag leaves printing to us with ContinueOnError
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "wait: unexpected arguments %q\n", fs.Args())
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, f.Timeout)
	defer cancel()
	if err := Wait(ctx, Options{URL: f.URL, Interval: f.Interval}); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}
