package proxy

import (
	"context"
	"errors"
	"time"

	"github.com/rdsvalet/rds-valet/internal/auth"
	"github.com/rdsvalet/rds-valet/internal/health"
)

// minAttemptTimeout keeps a per-path attempt long enough for a TLS handshake and a login over
// a slow link even when many paths share the connect timeout.
const minAttemptTimeout = 2 * time.Second

// pathTryer walks a health set's candidates for one connection.
type pathTryer struct {
	set            *health.Set
	listener       string
	m              *Metrics
	connectTimeout time.Duration
}

func (t pathTryer) Lookup(name string) (health.Path, bool) { return t.set.Lookup(name) }

func (t pathTryer) Try(ctx context.Context, login func(context.Context, health.Path) error) (health.Path, error) {
	if t.connectTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.connectTimeout)
		defer cancel()
	}
	cands := t.set.Candidates()
	nerr := &NoPathError{}
	for i, p := range cands {
		if ctx.Err() != nil {
			nerr.Attempts = append(nerr.Attempts, &PathError{Path: p.Name, Err: ctx.Err()})
			continue
		}
		actx, cancel := attemptContext(ctx, len(cands)-i)
		start := time.Now()
		err := login(actx, p)
		cancel()
		t.m.ObserveLogin(t.listener, p.Name, err == nil, time.Since(start).Seconds())
		if err == nil {
			t.set.ReportSuccess(p.Name)
			return p, nil
		}
		var final *FinalError
		if errors.As(err, &final) {
			// The upstream answered: the path works, the request does not.
			t.set.ReportSuccess(p.Name)
			return p, err
		}
		var ce *ClientError
		if errors.As(err, &ce) {
			return p, err
		}
		if !auth.IsTokenError(err) {
			// A login that could not get its IAM token says nothing about the network path;
			// counted against it, a credential outage would mark healthy paths down and close
			// their idle sessions.
			t.set.ReportFailure(p.Name, err)
		}
		nerr.Attempts = append(nerr.Attempts, &PathError{Path: p.Name, Err: err})
	}
	return health.Path{}, nerr
}

// attemptContext gives one attempt an equal share of what is left of the connect timeout, so a
// blackholed first path cannot eat the whole budget.
func attemptContext(ctx context.Context, remaining int) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok || remaining <= 1 {
		return context.WithCancel(ctx)
	}
	share := time.Until(dl) / time.Duration(remaining)
	if share < minAttemptTimeout {
		share = minAttemptTimeout
	}
	return context.WithTimeout(ctx, share)
}
