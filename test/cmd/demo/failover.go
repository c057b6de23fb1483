package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/world"
	"github.com/rdsvalet/rds-valet/test/harness/writeloop"
)

// control is the demo's control endpoint: POST /failover?engine=postgres|mysql fails that
// engine's cluster over for real and answers with how long the sidecar's writer listener took
// to move. One failover at a time.
type control struct {
	srv     *http.Server
	w       *world.World
	writers map[string]string // engine -> the sidecar's writer listener
	mu      sync.Mutex
	rows    int64 // row numbers used so far, so that each failover's loop writes new ones
}

func startControl(listen string, w *world.World, writers map[string]string) (*control, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, err
	}
	c := &control{w: w, writers: writers}
	mux := http.NewServeMux()
	mux.HandleFunc("/failover", c.failover)
	c.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

func (c *control) Close() { _ = c.srv.Close() }

func (c *control) failover(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(rw, "POST /failover?engine=postgres|mysql\n", http.StatusMethodNotAllowed)
		return
	}
	engine := r.URL.Query().Get("engine")
	insts := map[string][]*world.Instance{world.Postgres: c.w.Instances, world.MySQL: c.w.MySQLInstances}[engine]
	if insts == nil {
		http.Error(rw, fmt.Sprintf("engine %q: want postgres or mysql\n", engine), http.StatusBadRequest)
		return
	}
	if !c.mu.TryLock() {
		http.Error(rw, "a failover is under way; try again when it has finished\n", http.StatusConflict)
		return
	}
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), 90*time.Second)
	defer cancel()
	old, next := roles(ctx, insts)
	if old == nil || next == nil {
		http.Error(rw, fmt.Sprintf("%s: no writer and live standby to fail over between (a failover kills the old primary; the demo has one standby per engine)\n", engine), http.StatusConflict)
		return
	}
	msg, err := c.measure(ctx, engine, old, next)
	if err != nil {
		http.Error(rw, fmt.Sprintf("%s: %v\n", engine, err), http.StatusInternalServerError)
		return
	}
	fmt.Print("\n" + msg)
	_, _ = fmt.Fprint(rw, msg)
}

// roles returns the instance that answers as writer and one that answers as a replica.
func roles(ctx context.Context, insts []*world.Instance) (writer, standby *world.Instance) {
	for _, i := range insts {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		isWriter, err := i.IsWriter(cctx)
		cancel()
		switch {
		case err != nil: // killed by an earlier failover
		case isWriter && writer == nil:
			writer = i
		case !isWriter && standby == nil:
			standby = i
		}
	}
	return writer, standby
}

// measure runs one writer through the sidecar's writer listener, fails over, and reports the
// time from the promotion's completion to the first write the new writer acknowledged.
func (c *control) measure(ctx context.Context, engine string, old, next *world.Instance) (string, error) {
	addr := c.writers[engine]
	c.rows += 1 << 32
	loop := writeloop.Start(ctx, 1, c.rows, 20*time.Second, func(ctx context.Context) (writeloop.Session, error) {
		return writeloop.Dial(ctx, engine, addr)
	})
	stopped := false
	defer func() {
		if !stopped {
			loop.Stop()
		}
	}()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	_, err := loop.FirstAck(wctx, writeloop.ServerID(old), time.Time{})
	cancel()
	if err != nil {
		return "", fmt.Errorf("writes through %s before the failover: %w", addr, err)
	}
	started := time.Now()
	demoted, promoted, err := writeloop.FailOver(ctx, old, next)
	if err != nil {
		return "", fmt.Errorf("fail over from %s to %s: %w", old.ID, next.ID, err)
	}
	wctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	first, err := loop.FirstAck(wctx, writeloop.ServerID(next), time.Time{})
	cancel()
	if err != nil {
		return "", fmt.Errorf("after promoting %s: %w", next.ID, err)
	}
	res := loop.Stop()
	stopped = true
	var b strings.Builder
	how := "killed"
	if engine == world.MySQL {
		how = "made read-only, then killed"
	}
	fmt.Fprintf(&b, "%s: %s %s, %s promoted in %.2f s.\n", engine, old.ID, how, next.ID, promoted.Sub(started).Seconds())
	fmt.Fprintf(&b, "The sidecar's writer listener (%s) moved %.2f s after the promotion completed\n", addr, first.Sub(promoted).Seconds())
	fmt.Fprintf(&b, "(first write acknowledged by %s; a write loop through the sidecar all along).\n", next.ID)
	fmt.Fprintf(&b, "Writes accepted by %s after it was demoted: %d. Transactions: %s.\n", old.ID, res.AckedBy(writeloop.ServerID(old), demoted), res)
	for _, e := range res.Samples {
		fmt.Fprintf(&b, "  ended without the outcome-unknown error: %s\n", e)
	}
	return b.String(), nil
}
