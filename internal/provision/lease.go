package provision

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2t "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"go.uber.org/zap"
)

// TagLease is the tag on the database's security group that says which run is applying or
// destroying it: HOLDER:EXPIRY-UNIX-SECONDS. The security group is the first resource apply
// creates and the last destroy deletes, so it exists for as long as anything can be changed.
const TagLease = TagPrefix + "lease"

// LeaseHeldError says another run holds the lease: its apply or destroy is running now.
type LeaseHeldError struct {
	Database, GroupID string
	Holder            string
	Expiry            time.Time
}

func (e *LeaseHeldError) Error() string {
	return fmt.Sprintf("database %s: another apply or destroy holds the lease (security-group %s tag %s): holder %q until %s; "+
		"wait for it to finish, or, if that run is dead, for the lease to expire (or delete the tag)",
		e.Database, e.GroupID, TagLease, e.Holder, e.Expiry.UTC().Format(time.RFC3339))
}

// ErrLeaseLost is returned when another run took the lease while this one was running (it had
// expired because renewals failed): this run stops at the next AWS call.
var ErrLeaseLost = errors.New("apply lease lost")

// lease is one held lease, renewed in the background until released.
type lease struct {
	p       *Provisioner
	e       *env
	groupID string
	value   string
	// created is the security group's create change when taking the lease created it.
	created *Change

	cancel context.CancelFunc
	stop   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	lost   error
}

func parseLease(v string) (holder string, expiry time.Time, ok bool) {
	i := strings.LastIndex(v, ":")
	if i < 0 {
		return "", time.Time{}, false
	}
	sec, err := strconv.ParseInt(v[i+1:], 10, 64)
	if err != nil {
		return "", time.Time{}, false
	}
	return v[:i], time.Unix(sec, 0), true
}

func (p *Provisioner) leaseValue() string {
	return p.cfg.LeaseHolder + ":" + strconv.FormatInt(p.deps.Clock.Now().Add(p.cfg.LeaseTTL).Unix(), 10)
}

// takeLease takes the database's lease (read, write, read back) and renews it until released.
// With create set (apply) a missing security group is created with the lease already on it:
// CreateSecurityGroup is unique per name and VPC, so of two first applies only one creates it.
// Without a LeaseHolder it does nothing (library use).
func (p *Provisioner) takeLease(ctx context.Context, create bool) (context.Context, *lease, error) {
	if p.cfg.LeaseHolder == "" {
		return ctx, nil, nil
	}
	e, err := p.newEnv(ctx)
	if err != nil {
		return ctx, nil, err
	}
	l := &lease{p: p, e: e}
	sg := sgHandler{}
	name := baseName(e.spec)
	find := func() (*State, error) {
		obs, err := sg.observe(ctx, e)
		if err != nil {
			return nil, err
		}
		for _, o := range obs {
			if o.Name == name {
				return o, nil
			}
		}
		return nil, nil
	}
	o, err := find()
	if err != nil {
		return ctx, nil, err
	}
	if o == nil && !create {
		p.log.Info("no security group: nothing holds a lease", zap.String("security_group", name))
		return ctx, nil, nil
	}
	if o == nil {
		d := sg.desired(e)[0]
		c, _ := Diff(e.spec.Name, d, nil, nil)
		l.value = p.leaseValue()
		d.Tags = copyMap(d.Tags)
		d.Tags[TagLease] = l.value
		err := sg.create(ctx, e, d)
		switch {
		case err == nil:
			if o, err = find(); err != nil || o == nil {
				return ctx, nil, fmt.Errorf("security-group %q: created with the lease but not visible: %v", name, err)
			}
			l.groupID, l.created = o.ID, &c
			p.log.Info("lease taken", zap.String("security_group", o.ID), zap.String("lease", l.value), zap.Bool("created", true))
			return l.start(ctx), l, nil
		case isCode(err, "InvalidGroup.Duplicate"):
			// Another first apply created it a moment ago: it holds the lease.
			if o, err = find(); err != nil {
				return ctx, nil, err
			}
			if o == nil {
				return ctx, nil, fmt.Errorf("security-group %q: CreateSecurityGroup said it exists, but it is not visible", name)
			}
		default:
			if o, _ := find(); o != nil && o.Tags[TagLease] == l.value {
				// The group exists with our lease but its rules failed: give the lease back.
				l.groupID = o.ID
				l.releaseTag()
			}
			return ctx, nil, err
		}
	}
	if !o.Owned(e.spec.Name) {
		return ctx, nil, &NotOwnedError{Kind: o.Kind, Name: o.Name, ID: o.ID, Tags: o.Tags}
	}
	l.groupID = o.ID
	if cur := o.Tags[TagLease]; cur != "" {
		holder, expiry, ok := parseLease(cur)
		if ok && holder != p.cfg.LeaseHolder && expiry.After(p.deps.Clock.Now()) {
			return ctx, nil, &LeaseHeldError{Database: e.spec.Name, GroupID: o.ID, Holder: holder, Expiry: expiry}
		}
		p.log.Warn("taking over a lease", zap.String("security_group", o.ID), zap.String("previous", cur), zap.Bool("parsed", ok))
	}
	l.value = p.leaseValue()
	if err := l.write(ctx); err != nil {
		return ctx, nil, err
	}
	// Read back: of two runs that wrote at once, the one whose value stayed holds it.
	cur, err := l.read(ctx)
	if err != nil {
		return ctx, nil, err
	}
	if cur != l.value {
		holder, expiry, _ := parseLease(cur)
		return ctx, nil, &LeaseHeldError{Database: e.spec.Name, GroupID: o.ID, Holder: holder, Expiry: expiry}
	}
	p.log.Info("lease taken", zap.String("security_group", o.ID), zap.String("lease", l.value))
	return l.start(ctx), l, nil
}

func (l *lease) write(ctx context.Context) error {
	_, err := l.e.c.EC2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{l.groupID},
		Tags: []ec2t.Tag{{Key: aws.String(TagLease), Value: aws.String(l.value)}}})
	return awsErr(kindSG, baseName(l.e.spec), "ec2:CreateTags", err)
}

// read returns the lease tag's value ("" when there is none) and whether the group still exists.
func (l *lease) read(ctx context.Context) (string, error) {
	out, err := l.e.c.EC2.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2t.Filter{
		{Name: aws.String("resource-id"), Values: []string{l.groupID}}, {Name: aws.String("key"), Values: []string{TagLease}}}})
	if err != nil {
		return "", awsErr(kindSG, baseName(l.e.spec), "ec2:DescribeTags", err)
	}
	for _, t := range out.Tags {
		if deref(t.Key) == TagLease {
			return deref(t.Value), nil
		}
	}
	return "", nil
}

func (l *lease) groupGone(ctx context.Context) bool {
	_, err := l.e.c.EC2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{l.groupID}})
	return isCode(err, "InvalidGroup.NotFound")
}

// start renews the lease every third of its TTL; the returned context ends if it is lost.
func (l *lease) start(ctx context.Context) context.Context {
	ctx, l.cancel = context.WithCancel(ctx)
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	every := l.p.cfg.LeaseTTL / 3
	go func() {
		defer close(l.done)
		for {
			select {
			case <-l.stop:
				return
			case <-ctx.Done():
				return
			case <-l.p.deps.Clock.After(every):
			}
			if stop := l.renew(ctx); stop {
				return
			}
		}
	}()
	return ctx
}

// renew checks the lease is still ours and pushes its expiry; it reports whether to stop.
func (l *lease) renew(ctx context.Context) bool {
	cur, err := l.read(ctx)
	if err != nil {
		// A failed renewal is retried next time; the TTL leaves room for two of them.
		l.p.log.Warn("lease renewal failed", zap.Error(err))
		return false
	}
	if cur == "" && l.groupGone(ctx) {
		return true // destroy deleted the group, and the lease with it
	}
	if cur != l.value {
		holder, expiry, _ := parseLease(cur)
		l.mu.Lock()
		l.lost = fmt.Errorf("database %s: %w: security-group %s tag %s is now %q (holder %q until %s); this run stopped",
			l.e.spec.Name, ErrLeaseLost, l.groupID, TagLease, cur, holder, expiry.UTC().Format(time.RFC3339))
		l.mu.Unlock()
		l.cancel()
		return true
	}
	l.value = l.p.leaseValue()
	if err := l.write(ctx); err != nil {
		l.p.log.Warn("lease renewal failed", zap.Error(err))
		return false
	}
	l.p.log.Debug("lease renewed", zap.String("lease", l.value))
	return false
}

// release stops renewing and removes the lease if it is still ours. It returns err, or the
// lease-lost error when the run was stopped because another run took the lease.
func (l *lease) release(err error) error {
	if l == nil {
		return err
	}
	close(l.stop)
	<-l.done
	l.cancel()
	l.mu.Lock()
	lost := l.lost
	l.mu.Unlock()
	if lost != nil {
		return lost
	}
	l.releaseTag()
	return err
}

// releaseTag deletes the lease tag only if it still carries our value (DeleteTags with a
// value is conditional), on a context of its own: the run's may be cancelled.
func (l *lease) releaseTag() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := l.e.c.EC2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{l.groupID},
		Tags: []ec2t.Tag{{Key: aws.String(TagLease), Value: aws.String(l.value)}}})
	if err != nil && !isCode(err, "InvalidGroup.NotFound", "InvalidID") {
		l.p.log.Warn("could not release the lease; it expires on its own", zap.String("security_group", l.groupID), zap.Error(err))
		return
	}
	l.p.log.Info("lease released", zap.String("security_group", l.groupID))
}

// markCreated shows in the executed plan that taking the lease created the security group
// (the handler then found it as wanted and planned nothing).
func (l *lease) markCreated(plan *Plan) {
	if l == nil || l.created == nil || plan == nil {
		return
	}
	for i, c := range plan.Changes {
		if c.Kind == l.created.Kind && c.Name == l.created.Name && c.Action == ActionNoop {
			plan.Changes[i] = *l.created
			plan.Changes[i].ID = c.ID
		}
	}
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
