package reuse

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rdsvalet/rds-valet/internal/proxy"
)

// Budget is the pod's upstream login budget: a token bucket that every listener's logins
// draw from, so that the sidecar never asks RDS to verify IAM tokens faster than Rate per
// second (AWS recommends staying under 200 new IAM connections per second per instance; small
// instances throttle well below). A login over budget waits for its turn within its
// connect timeout rather than failing.
type Budget struct {
	interval time.Duration // one login's share of a second
	slack    time.Duration // the burst: how far ahead of the steady rate logins may run
	now      func() time.Time

	mu  sync.Mutex
	tat time.Time // when the bucket would be full again at the steady rate (GCRA)

	waits   prometheus.Histogram
	waited  prometheus.Counter
	refused prometheus.Counter
}

// BudgetConfig sizes a Budget: Rate logins per second, up to Burst at once.
type BudgetConfig struct {
	Rate  float64
	Burst int
}

// ErrOverBudget is what a login gets when its turn would come after its deadline.
type ErrOverBudget struct{ Wait time.Duration }

func (e *ErrOverBudget) Error() string {
	return fmt.Sprintf("the sidecar's upstream login budget is spent: the next login is %v away, past the connect timeout", e.Wait.Round(time.Millisecond))
}

// NewBudget returns the budget cfg describes, its metrics registered on reg.
func NewBudget(cfg BudgetConfig, reg prometheus.Registerer) *Budget {
	b := &Budget{
		interval: time.Duration(float64(time.Second) / cfg.Rate),
		now:      time.Now,
		waits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "rdsvalet_reuse_login_budget_wait_seconds",
			Help:    "How long upstream logins waited for the pod's login budget (0 when a token was at hand).",
			Buckets: []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10},
		}),
		waited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rdsvalet_reuse_login_budget_waits_total",
			Help: "Upstream logins that had to wait for the pod's login budget.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "rdsvalet_reuse_login_budget_refused_total",
			Help: "Upstream logins refused because their turn in the login budget came after their connect timeout.",
		}),
	}
	b.slack = time.Duration(max(cfg.Burst, 1)-1) * b.interval
	if reg != nil {
		reg.MustRegister(b.waits, b.waited, b.refused)
	}
	return b
}

// Wait returns once a login may go, or an *ErrOverBudget at once if its turn comes after
// ctx's deadline (nothing is spent then), or ctx's error if ctx ends first.
func (b *Budget) Wait(ctx context.Context) error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	now := b.now()
	tat := b.tat
	if tat.Before(now) {
		tat = now
	}
	wait := tat.Add(-b.slack).Sub(now)
	if dl, ok := ctx.Deadline(); ok && wait > 0 && now.Add(wait).After(dl) {
		b.mu.Unlock()
		b.refused.Inc()
		return &ErrOverBudget{Wait: wait}
	}
	b.tat = tat.Add(b.interval)
	b.mu.Unlock()
	if wait <= 0 {
		b.waits.Observe(0)
		return nil
	}
	b.waited.Inc()
	b.waits.Observe(wait.Seconds())
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Source makes every Open of inner (a login) wait for the budget first, at most maxWait (the
// listener's connect timeout).
func (b *Budget) Source(inner proxy.Source, maxWait time.Duration) proxy.Source {
	if b == nil {
		return inner
	}
	return budgeted{b: b, inner: inner, maxWait: maxWait}
}

type budgeted struct {
	b       *Budget
	inner   proxy.Source
	maxWait time.Duration
}

func (s budgeted) Open(ctx context.Context, st *proxy.Startup) (*proxy.Session, error) {
	wctx := ctx
	if s.maxWait > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, s.maxWait)
		defer cancel()
	}
	if err := s.b.Wait(wctx); err != nil {
		return nil, err
	}
	return s.inner.Open(ctx, st)
}
