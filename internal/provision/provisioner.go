package provision

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/sts"
	"go.uber.org/zap"
)

// Clock is the time source waiters sleep on; tests and the binary use the real one.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// RealClock is the wall clock.
func RealClock() Clock { return realClock{} }

// Config tunes one provisioner run.
type Config struct {
	Spec *Spec
	// PollInterval is the first wait between Describe calls; it grows 1.5x up to MaxPollInterval.
	PollInterval    time.Duration
	MaxPollInterval time.Duration
	// WaitTimeout bounds the wait for one resource to settle (RDS instances take 10-40 min).
	WaitTimeout time.Duration
	// ProxyIPSource is how the proxy's current IPs are found: "eni" (DescribeNetworkInterfaces)
	// or "dns" (resolve the proxy endpoint; needs to run inside the VPC).
	ProxyIPSource string
	// SkipFinalSnapshot deletes the instance without a final snapshot on destroy.
	SkipFinalSnapshot bool
	// LeaseHolder names this run in the apply lease (lease.go); empty = take no lease.
	LeaseHolder string
	// LeaseTTL is how long a lease lasts unless renewed (every third of it).
	LeaseTTL time.Duration
	// DBUsers, when set, has plan and apply log in to the database to create the db users.
	DBUsers *DBUsersConfig
}

// Deps are the provisioner's collaborators.
type Deps struct {
	Clients  Clients
	Logger   *zap.Logger
	Clock    Clock
	Resolver Resolver // for ProxyIPSource "dns"
}

// Resolver resolves a host name to IP addresses (net.Resolver satisfies it).
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Provisioner plans and applies one database spec.
type Provisioner struct {
	cfg  Config
	deps Deps
	log  *zap.Logger
	// guard, when set, vets each change apply is about to make (ApplySaved).
	guard func(Change) error
}

// New checks the config and returns a provisioner.
func New(cfg Config, deps Deps) (*Provisioner, error) {
	if cfg.Spec == nil {
		return nil, errors.New("provision: no spec")
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 5 * time.Second
	}
	if cfg.MaxPollInterval < cfg.PollInterval {
		cfg.MaxPollInterval = 30 * time.Second
		if cfg.MaxPollInterval < cfg.PollInterval {
			cfg.MaxPollInterval = cfg.PollInterval
		}
	}
	if cfg.WaitTimeout <= 0 {
		cfg.WaitTimeout = 60 * time.Minute
	}
	switch cfg.ProxyIPSource {
	case "":
		cfg.ProxyIPSource = "eni"
	case "eni", "dns":
	default:
		return nil, fmt.Errorf("provision: proxy IP source %q: want eni or dns", cfg.ProxyIPSource)
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 10 * time.Minute
	}
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	if deps.Clock == nil {
		deps.Clock = RealClock()
	}
	return &Provisioner{cfg: cfg, deps: deps, log: deps.Logger}, nil
}

// env carries the run's identity and the outputs of resources already handled (ids, ARNs,
// endpoints), which later resources reference.
type env struct {
	spec    *Spec
	account string
	region  string
	out     map[string]string
	c       Clients
	p       *Provisioner
	// consumerEC2 is built on first use (it may assume a role in another account).
	consumerEC2 ConsumerEC2API
	// noticed holds the warnings already logged this run (see notice).
	noticed map[string]bool
}

func (e *env) get(k string) string {
	if v, ok := e.out[k]; ok && v != "" {
		return v
	}
	return Unknown
}

func (e *env) known(keys ...string) bool {
	for _, k := range keys {
		if e.get(k) == Unknown {
			return false
		}
	}
	return true
}

func (p *Provisioner) newEnv(ctx context.Context) (*env, error) {
	id, err := p.deps.Clients.STS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		return nil, awsErr("account", p.cfg.Spec.Name, "sts:GetCallerIdentity", err)
	}
	return &env{spec: p.cfg.Spec, account: deref(id.Account), region: p.cfg.Spec.Region, out: map[string]string{}, c: p.deps.Clients, p: p}, nil
}

// Plan computes the changes apply would make, from observed state.
func (p *Provisioner) Plan(ctx context.Context) (*Plan, error) {
	plan, e, err := p.converge(ctx, false, p.handlers())
	if err == nil {
		err = p.dbUsersStep(ctx, e, plan, false)
	}
	return plan, err
}

// Apply makes AWS match the spec, in dependency order, waiting for each resource to settle.
// It re-observes every resource before acting, so a run after an interruption resumes where
// the last one stopped. It returns the plan it executed and the outputs for the sidecar config.
func (p *Provisioner) Apply(ctx context.Context) (plan *Plan, out *Outputs, err error) {
	// Prerequisites are checked before the lease, whose first take creates the security group:
	// a spec that cannot work must leave nothing behind.
	if err := p.preflight(ctx); err != nil {
		return nil, nil, err
	}
	ctx, l, err := p.takeLease(ctx, true)
	if err != nil {
		return nil, nil, err
	}
	defer func() { l.markCreated(plan); err = l.release(err) }()
	plan, e, err := p.converge(ctx, true, p.handlers())
	if err == nil {
		err = p.dbUsersStep(ctx, e, plan, true)
	}
	if err != nil {
		return plan, nil, err
	}
	return plan, e.outputs(), nil
}

// SyncTargets makes the NLB target group equal to the proxy's current IPs and touches nothing
// else. It is safe to run often (CronJob): when nothing changed it only reads.
func (p *Provisioner) SyncTargets(ctx context.Context) (*Plan, error) {
	e, err := p.newEnv(ctx)
	if err != nil {
		return nil, err
	}
	plan := &Plan{Database: p.cfg.Spec.Name}
	// Read-only look at the proxy: its name and endpoint are all the IP lookup needs.
	for _, h := range []handler{&proxyHandler{}} {
		obs, err := h.observe(ctx, e)
		if err != nil {
			return plan, err
		}
		for _, o := range obs {
			if o.Owned(e.spec.Name) {
				h.export(e, o)
			}
		}
	}
	if !e.known("proxy.name") {
		return plan, fmt.Errorf("sync-targets: db-proxy %q does not exist yet; run apply first", p.cfg.Spec.Name)
	}
	if err := p.resolveProxyIPs(ctx, e); err != nil {
		return plan, err
	}
	tg := &targetGroupHandler{}
	obs, err := tg.observe(ctx, e)
	if err != nil {
		return plan, err
	}
	if len(obs) == 0 {
		return plan, fmt.Errorf("sync-targets: target group %q does not exist yet; run apply first", tgName(e.spec))
	}
	d := tg.desired(e)[0]
	c, err := Diff(e.spec.Name, d, obs[0], tg.immutable())
	if err != nil {
		return plan, err
	}
	// Only the target list is ours to fix here; any other drift is apply's business.
	var only []FieldDiff
	for _, f := range c.Fields {
		if f.Field == "targets" {
			only = append(only, f)
		}
	}
	c.Fields = only
	if len(only) == 0 {
		c.Action = ActionNoop
	}
	plan.Changes = append(plan.Changes, c)
	if c.Action == ActionUpdate {
		p.log.Info("syncing NLB targets", zap.String("target_group", d.Name), zap.String("from", only[0].From), zap.String("to", only[0].To))
		if err := tg.update(ctx, e, d, obs[0], only); err != nil {
			return plan, err
		}
	}
	return plan, nil
}

// DestroyOptions guard destroy.
type DestroyOptions struct {
	DryRun                  bool
	ForceDeletionProtection bool
}

// ErrDeletionProtected is returned by destroy when the instance is protected and not forced.
var ErrDeletionProtected = errors.New("deletion protection is on")

// Destroy deletes every resource this database owns, in reverse dependency order.
func (p *Provisioner) Destroy(ctx context.Context, opts DestroyOptions) (plan *Plan, err error) {
	if !opts.DryRun {
		var l *lease
		if ctx, l, err = p.takeLease(ctx, false); err != nil {
			return nil, err
		}
		defer func() { err = l.release(err) }()
	}
	e, err := p.newEnv(ctx)
	if err != nil {
		return nil, err
	}
	hs := p.handlers()
	observed := make([][]*State, len(hs))
	for i, h := range hs {
		obs, err := h.observe(ctx, e)
		if err != nil {
			return nil, err
		}
		for _, o := range obs {
			if !isGone(h, o) {
				observed[i] = append(observed[i], o)
			}
		}
		for _, o := range obs {
			if o.Owned(e.spec.Name) {
				h.export(e, o)
			}
		}
	}
	plan = &Plan{Database: p.cfg.Spec.Name}
	protected := ""
	for i := len(hs) - 1; i >= 0; i-- {
		for _, o := range observed[i] {
			c, _ := Diff(e.spec.Name, nil, o, nil)
			if c.Action == ActionDelete {
				plan.Changes = append(plan.Changes, c)
			} else {
				p.log.Info("leaving resource that is not ours", zap.String("kind", o.Kind), zap.String("name", o.Name), zap.String("id", o.ID))
			}
			if o.Kind == kindInstance && c.Action == ActionDelete && o.Attrs["deletion_protection"] == "true" && !opts.ForceDeletionProtection {
				protected = o.Name
			}
		}
	}
	if protected != "" {
		return plan, fmt.Errorf("destroy %s: db-instance %q: %w; nothing was deleted. Run again with --force-deletion-protection to turn it off and delete", p.cfg.Spec.Name, protected, ErrDeletionProtected)
	}
	if opts.DryRun {
		return plan, nil
	}
	for i := len(hs) - 1; i >= 0; i-- {
		h := hs[i]
		for _, o := range observed[i] {
			if !o.Owned(e.spec.Name) {
				continue
			}
			start := p.deps.Clock.Now()
			p.log.Info("deleting", zap.String("kind", o.Kind), zap.String("name", o.Name), zap.String("id", o.ID))
			if err := h.delete(ctx, e, o); err != nil {
				return plan, err
			}
			if err := p.waitGone(ctx, h, e, o.Name); err != nil {
				return plan, err
			}
			p.log.Info("deleted", zap.String("kind", o.Kind), zap.String("name", o.Name), zap.Duration("took", p.deps.Clock.Now().Sub(start)))
		}
	}
	return plan, nil
}

// Status observes every resource (ours or squatting one of our names) and returns them with
// the sidecar paths known now. It only reads.
func (p *Provisioner) Status(ctx context.Context) ([]*State, *Outputs, error) {
	e, err := p.newEnv(ctx)
	if err != nil {
		return nil, nil, err
	}
	var all []*State
	for _, h := range p.handlers() {
		obs, err := h.observe(ctx, e)
		if err != nil {
			return nil, nil, err
		}
		for _, o := range obs {
			if o.Owned(e.spec.Name) {
				h.export(e, o)
			}
			all = append(all, o)
		}
	}
	return all, e.outputs(), nil
}

// preflight makes the read-only checks that fail a spec before anything is created: the IRSA
// roles' OIDC provider must be in this account and exist (or be creatable).
func (p *Provisioner) preflight(ctx context.Context) error {
	e, err := p.newEnv(ctx)
	if err != nil {
		return err
	}
	_, err = p.oidcProviderStep(ctx, e, false)
	return err
}

// converge runs the handlers in order: observe, diff, and when apply is set, act and wait.
func (p *Provisioner) converge(ctx context.Context, apply bool, hs []handler) (*Plan, *env, error) {
	e, err := p.newEnv(ctx)
	if err != nil {
		return nil, nil, err
	}
	plan := &Plan{Database: p.cfg.Spec.Name}
	if len(hs) > 0 { // the IRSA roles' OIDC provider (oidcprovider.go)
		c, err := p.oidcProviderStep(ctx, e, apply)
		if c != nil {
			plan.Changes = append(plan.Changes, *c)
		}
		if err != nil {
			return plan, e, err
		}
	}
	for _, h := range hs {
		if h.kind() == kindTargetGroup {
			if err := p.resolveProxyIPs(ctx, e); err != nil {
				return plan, e, err
			}
		}
		obs, err := h.observe(ctx, e)
		if err != nil {
			return plan, e, err
		}
		plan.observed = append(plan.observed, obs...)
		byName := map[string]*State{}
		for _, o := range obs {
			byName[o.Name] = o
		}
		des := h.desired(e)
		type step struct {
			c    Change
			d, o *State
		}
		var steps []step
		seen := map[string]bool{}
		for _, d := range des {
			seen[d.Name] = true
			o := byName[d.Name]
			if n, ok := h.(normalizer); ok && o != nil {
				n.normalize(d, o)
			}
			c, err := Diff(e.spec.Name, d, o, h.immutable())
			if err != nil {
				return plan, e, err
			}
			steps = append(steps, step{c, d, o})
		}
		for _, o := range obs {
			if seen[o.Name] {
				continue
			}
			c, _ := Diff(e.spec.Name, nil, o, nil)
			steps = append(steps, step{c, nil, o})
		}
		for _, s := range steps {
			plan.Changes = append(plan.Changes, s.c)
			if apply && p.guard != nil {
				// Applying a saved plan: stop before acting on anything it did not show.
				if err := p.guard(s.c); err != nil {
					return plan, e, err
				}
			}
			if apply && s.o != nil && s.c.Action != ActionDelete && s.o.Owned(e.spec.Name) {
				// Still settling (e.g. created by a run that was interrupted): wait before
				// anything depends on it or modifies it.
				ok, err := h.ready(s.o)
				if err != nil {
					return plan, e, err
				}
				if !ok {
					now, err := p.waitReady(ctx, h, e, s.o.Name)
					if err != nil {
						return plan, e, err
					}
					s.o = now
				}
			}
			if !apply || s.c.Action == ActionNoop {
				if s.o != nil && s.c.Action != ActionDelete && s.o.Owned(e.spec.Name) {
					h.export(e, s.o)
				}
				continue
			}
			if err := p.execute(ctx, h, e, s.c, s.d, s.o); err != nil {
				return plan, e, err
			}
		}
	}
	return plan, e, nil
}

func (p *Provisioner) execute(ctx context.Context, h handler, e *env, c Change, d, o *State) error {
	start := p.deps.Clock.Now()
	log := p.log.With(zap.String("kind", c.Kind), zap.String("name", c.Name))
	log.Info(string(c.Action)+" started", zap.Int("fields", len(c.Fields)))
	var err error
	switch c.Action {
	case ActionCreate:
		err = h.create(ctx, e, d)
	case ActionUpdate:
		err = h.update(ctx, e, d, o, c.Fields)
	case ActionDelete:
		err = h.delete(ctx, e, o)
	}
	if err != nil {
		return err
	}
	if c.Action == ActionDelete {
		if err := p.waitGone(ctx, h, e, c.Name); err != nil {
			return err
		}
	} else {
		now, err := p.waitReady(ctx, h, e, c.Name)
		if err != nil {
			return err
		}
		h.export(e, now)
	}
	log.Info(string(c.Action)+" done", zap.Duration("took", p.deps.Clock.Now().Sub(start)))
	return nil
}

// waitReady polls until the named resource exists and reports a settled status, with bounded
// exponential backoff and a progress line per poll.
func (p *Provisioner) waitReady(ctx context.Context, h handler, e *env, name string) (*State, error) {
	var last *State
	err := p.poll(ctx, h.kind(), name, func() (bool, string, error) {
		obs, err := h.observe(ctx, e)
		if err != nil {
			return false, "", err
		}
		for _, o := range obs {
			if o.Name == name {
				last = o
				ok, err := h.ready(o)
				return ok, o.Status, err
			}
		}
		return false, "not visible yet", nil
	})
	return last, err
}

func (p *Provisioner) waitGone(ctx context.Context, h handler, e *env, name string) error {
	return p.poll(ctx, h.kind(), name, func() (bool, string, error) {
		obs, err := h.observe(ctx, e)
		if err != nil {
			return false, "", err
		}
		for _, o := range obs {
			if o.Name == name && !isGone(h, o) {
				return false, o.Status, nil
			}
		}
		return true, "", nil
	})
}

func (p *Provisioner) poll(ctx context.Context, kind, name string, check func() (bool, string, error)) error {
	start := p.deps.Clock.Now()
	delay := p.cfg.PollInterval
	for {
		done, status, err := check()
		if err != nil || done {
			return err
		}
		elapsed := p.deps.Clock.Now().Sub(start)
		if elapsed > p.cfg.WaitTimeout {
			return fmt.Errorf("%s %q: still %q after %s; check the AWS console/events for this resource and run apply again", kind, name, status, p.cfg.WaitTimeout)
		}
		p.log.Info("waiting", zap.String("kind", kind), zap.String("name", name), zap.String("status", status), zap.Duration("elapsed", elapsed.Round(time.Millisecond)))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %q: waiting: %w", kind, name, ctx.Err())
		case <-p.deps.Clock.After(delay):
		}
		delay = delay * 3 / 2
		if delay > p.cfg.MaxPollInterval {
			delay = p.cfg.MaxPollInterval
		}
	}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
