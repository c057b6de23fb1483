package provision

import (
	"context"
	"encoding/json"
	"sort"
	"strconv"
	"strings"
)

// handler knows one kind of resource: how to observe it, what the spec wants, and how to act.
type handler interface {
	kind() string
	immutable() []string
	observe(ctx context.Context, e *env) ([]*State, error)
	desired(e *env) []*State
	create(ctx context.Context, e *env, d *State) error
	update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error
	delete(ctx context.Context, e *env, o *State) error
	ready(o *State) (bool, error)
	export(e *env, o *State)
}

// normalizer adjusts desired to observed where AWS legitimately moves a value on its own
// (storage autoscaling, automatic minor version upgrades).
type normalizer interface{ normalize(d, o *State) }

// goner is a handler whose resources can linger, observable, after a successful delete (a
// secret in its recovery window): gone reports whether one counts as deleted.
type goner interface{ gone(o *State) bool }

func isGone(h handler, o *State) bool {
	g, ok := h.(goner)
	return ok && g.gone(o)
}

const (
	kindSG          = "security-group"
	kindSubnetGroup = "db-subnet-group"
	kindSecret      = "secret"
	kindInstance    = "db-instance"
	kindReplica     = "db-replica"
	kindRole        = "iam-role"
	kindProxy       = "db-proxy"
	kindProxyTarget = "db-proxy-target"
	kindLB          = "load-balancer"
	kindTargetGroup = "target-group"
	kindListener    = "listener"
	kindService     = "endpoint-service"
	kindEndpoint    = "vpc-endpoint"
)

// handlers returns every resource kind in dependency order; destroy walks it backwards.
func (p *Provisioner) handlers() []handler {
	return []handler{&sgHandler{}, &subnetGroupHandler{}, &paramGroupHandler{}, &secretHandler{}, &instanceHandler{}, &replicaHandler{}, proxyRoleHandler(),
		&proxyHandler{}, &proxyTargetHandler{}, &lbHandler{}, &targetGroupHandler{}, &listenerHandler{},
		&serviceHandler{}, &endpointHandler{}, irsaRoleHandler(), podIdentityHandler{}, syncTargetsRoleHandler()}
}

func baseName(s *Spec) string   { return "rdsvalet-" + s.Name }
func tgName(s *Spec) string     { return baseName(s) }
func secretName(s *Spec) string { return "rdsvalet/" + s.Name + "/master" }
func engineFamily(s *Spec) string {
	if s.Engine.Type == "mysql" {
		return "MYSQL"
	}
	return "POSTGRESQL"
}

func ownTags(s *Spec) map[string]string {
	t := map[string]string{TagManagedBy: ManagedByValue, TagDatabase: s.Name}
	for k, v := range s.Tags {
		t[k] = v
	}
	return t
}

func sortedJoin(vals []string) string {
	c := append([]string(nil), vals...)
	sort.Strings(c)
	return strings.Join(c, ",")
}

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// setDiff returns what is in want and not in have, and what is in have and not in want.
func setDiff(want, have []string) (add, del []string) {
	w, h := map[string]bool{}, map[string]bool{}
	for _, x := range want {
		w[x] = true
	}
	for _, x := range have {
		h[x] = true
	}
	for _, x := range want {
		if !h[x] {
			add = append(add, x)
		}
	}
	for _, x := range have {
		if !w[x] {
			del = append(del, x)
		}
	}
	return
}

// tagChanges extracts the tags to set from a diff.
func tagChanges(fields []FieldDiff, d *State) map[string]string {
	out := map[string]string{}
	for _, f := range fields {
		if k, ok := strings.CutPrefix(f.Field, "tags."); ok {
			out[k] = d.Tags[k]
		}
	}
	return out
}

func canonJSON(s string) string {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only static policy shapes are marshalled
	}
	return canonJSON(string(b))
}

func b2s(b bool) string { return strconv.FormatBool(b) }
