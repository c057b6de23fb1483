package fakeaws

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// reqCtx is one decoded request.
type reqCtx struct {
	s       *Server
	form    url.Values
	json    map[string]any
	account string
	region  string
	caller  creds    // who signed the request (zero for an unsigned STS call)
	rest    *restReq // path parameters and query of a REST-JSON request (eks.go)
}

func (c *reqCtx) get(k string) string { return c.form.Get(k) }

func (c *reqCtx) flat() map[string]string {
	m := make(map[string]string, len(c.form))
	for k, v := range c.form {
		m[k] = v[0]
	}
	return m
}

func (c *reqCtx) strs(prefix string) []string    { return fstrs(c.flat(), prefix) }
func (c *reqCtx) structs(prefix string) []fields { return fstructs(c.flat(), prefix) }
func (c *reqCtx) has(k string) bool              { _, ok := c.form[k]; return ok }
func (c *reqCtx) boolean(k string) bool          { return c.form.Get(k) == "true" }
func (c *reqCtx) int32(k string) int32           { n, _ := strconv.Atoi(c.form.Get(k)); return int32(n) }
func (c *reqCtx) arn(svc, res string) string {
	return fmt.Sprintf("arn:aws:%s:%s:%s:%s", svc, c.region, c.account, res)
}
func (c *reqCtx) jstr(k string) string { s, _ := c.json[k].(string); return s }
func (c *reqCtx) tagsFrom(prefix string) map[string]string {
	out := map[string]string{}
	for _, t := range c.structs(prefix) {
		out[t["Key"]] = t["Value"]
	}
	return out
}

type fields = map[string]string

// fstrs collects a Query-protocol list of strings (Prefix.N, Prefix.member.N, Prefix.Name.N).
func fstrs(m map[string]string, prefix string) []string {
	type iv struct {
		i int
		v string
	}
	var out []iv
	for k, v := range m {
		if !strings.HasPrefix(k, prefix+".") {
			continue
		}
		segs := strings.Split(k[len(prefix)+1:], ".")
		if len(segs) > 2 {
			continue
		}
		if n, err := strconv.Atoi(segs[len(segs)-1]); err == nil {
			out = append(out, iv{n, v})
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].i < out[b].i })
	vals := make([]string, len(out))
	for i, x := range out {
		vals[i] = x.v
	}
	return vals
}

// fstructs collects a Query-protocol list of structures; each item keeps its nested keys
// (e.g. "Tag.1.Key") so it can be decoded again with fstrs/fstructs.
func fstructs(m map[string]string, prefix string) []fields {
	items := map[int]fields{}
	for k, v := range m {
		if !strings.HasPrefix(k, prefix+".") {
			continue
		}
		segs := strings.Split(k[len(prefix)+1:], ".")
		for i, sg := range segs {
			n, err := strconv.Atoi(sg)
			if err != nil {
				continue
			}
			if i+1 < len(segs) {
				if items[n] == nil {
					items[n] = fields{}
				}
				items[n][strings.Join(segs[i+1:], ".")] = v
			}
			break
		}
	}
	idx := make([]int, 0, len(items))
	for i := range items {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	out := make([]fields, len(idx))
	for i, n := range idx {
		out[i] = items[n]
	}
	return out
}

// life is a resource's lifecycle, advanced by Describe calls.
type life struct {
	status string
	next   string
	polls  int
	// need is how many polls the current transition takes (0 = the fake's ReadyAfter); then is
	// one further transition after next (e.g. modifying -> storage-optimization -> available).
	need int
	then *lifeStep
}

type lifeStep struct {
	status string
	polls  int
}

func (l *life) set(now, next string) {
	l.status, l.next, l.polls, l.need, l.then = now, next, 0, 0, nil
}

func (st *state) tick(l *life) {
	if l.next == "" {
		return
	}
	l.polls++
	need := l.need
	if need == 0 {
		need = st.readyAfter
	}
	if l.polls >= need {
		l.status, l.next, l.polls, l.need = l.next, "", 0, 0
		if l.then != nil {
			l.next, l.need, l.then = l.then.status, l.then.polls, nil
		}
	}
}

type subnetGroup struct {
	name, region, desc, arn, vpc string
	subnets                      []string
	tags                         map[string]string
}

type dbInstance struct {
	life
	// region is where the instance lives; replication (replicas.go) links instances across Regions.
	region, az                                                           string
	replica                                                              replication
	id, arn, resID, class, engine, version, masterUser, subnetGroup, kms string
	storage, maxStorage, backup                                          int32
	multiAZ, delProt, iamAuth, encrypted, managed                        bool
	secretArn, endpoint                                                  string
	paramGroup, paramApply                                               string // DBParameterGroups[0]: name, ParameterApplyStatus
	port                                                                 int32
	sgs                                                                  []string
	tags                                                                 map[string]string
}

type dbProxy struct {
	life
	name, arn, engineFamily, roleArn, endpoint, vpc string
	defaultAuthScheme                               string // NONE | IAM_AUTH
	requireTLS                                      bool
	// registering counts the DescribeDBProxyTargets calls each target has left in REGISTERING.
	registering                map[string]int
	auth                       []fields
	subnets, sgs, targets, ips []string
	tags                       map[string]string
}

type secret struct {
	name, arn, desc, kms, value string
	tags                        map[string]string
	// deletedDate is set while the secret waits out its recovery window (0 = not deleted).
	deletedDate float64
}

type role struct {
	name, path, arn, id, trust string
	policies                   map[string]string
	tags                       map[string]string
}

type secGroup struct {
	id, name, vpc, desc string
	rules               map[string]bool // "tcp|from|to|sg-x" or "tcp|from|to|cidr"
	tags                map[string]string
}

type loadBalancer struct {
	life
	name, arn, dns, scheme, typ string
	subnets, sgs                []string
	tags                        map[string]string
	attrs                       map[string]string
}

type targetGroup struct {
	name, arn, protocol, vpc, targetType string
	port                                 int32
	targets                              map[string]*target // ip -> target
	tags                                 map[string]string
	attrs                                map[string]string
	hc                                   healthCheck
}

type listener struct {
	arn, lbArn, protocol, tgArn string
	port                        int32
	tags                        map[string]string
}

type endpointService struct {
	life
	id, name, account  string
	acceptance         bool
	nlbs, principals   []string
	tags               map[string]string
	pendingConnections map[string]bool
}

type vpcEndpoint struct {
	life
	id, serviceName, vpc, account string
	subnets, sgs                  []string
	dns                           string
	created                       time.Time
	tags                          map[string]string
}

type state struct {
	readyAfter int
	// home is the fake's own Region (Config.Region): its instances and subnet groups are keyed
	// by name alone, those of other Regions by REGION/name (instKey).
	home         string
	n            int
	subnetGroups map[string]*subnetGroup
	instances    map[string]*dbInstance
	proxies      map[string]*dbProxy
	secrets      map[string]*secret
	roles        map[string]*role
	sgs          map[string]*secGroup
	lbs          map[string]*loadBalancer
	tgs          map[string]*targetGroup
	listeners    map[string]*listener
	services     map[string]*endpointService
	endpoints    map[string]*vpcEndpoint
	// Networking and idempotency (network.go, idempotency.go, targets.go).
	subnets map[string]*subnet
	tokens  map[string]*tokenRecord
	salt    string
	used    map[string]bool
	// lingering counts the DeleteSecurityGroup attempts still refused for a group whose NLB was
	// just deleted: AWS releases the NLB's network interfaces minutes later.
	lingering map[string]int
	// kmsKeys by key id, kmsAliases alias name (alias/NAME) -> key id, paramGroups by name.
	kmsKeys     map[string]*kmsKey
	kmsAliases  map[string]string
	paramGroups map[string]*paramGroup
	idn         *identityState // OIDC providers, issuer keys, other accounts' roles (oidc.go)
	eksSt       *eksState      // EKS clusters and pod identity associations (eks.go)
}

func newState() *state {
	return &state{readyAfter: 2,
		subnetGroups: map[string]*subnetGroup{}, instances: map[string]*dbInstance{}, proxies: map[string]*dbProxy{},
		secrets: map[string]*secret{}, roles: map[string]*role{}, sgs: map[string]*secGroup{}, lbs: map[string]*loadBalancer{},
		tgs: map[string]*targetGroup{}, listeners: map[string]*listener{}, services: map[string]*endpointService{},
		endpoints: map[string]*vpcEndpoint{}, lingering: map[string]int{},
		subnets: map[string]*subnet{}, tokens: map[string]*tokenRecord{}, salt: randHex(8), used: map[string]bool{},
		kmsKeys: map[string]*kmsKey{}, kmsAliases: map[string]string{}, paramGroups: map[string]*paramGroup{}}
}

// id returns a fresh hex id of n digits, unique within the fake. The ids are random (as AWS's
// are), so lists sorted by id come back in an order unrelated to creation order and code that
// depends on list position is caught.
func (st *state) id(prefix string, n int) string {
	for {
		st.n++
		sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", st.salt, st.n)))
		h := strings.Repeat(hex.EncodeToString(sum[:]), 1+n/64)[:n]
		if !st.used[prefix+h] {
			st.used[prefix+h] = true
			return prefix + h
		}
	}
}

func tagItems(tags map[string]string, keyName, valName string) []X {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]X, 0, len(keys))
	for _, k := range keys {
		out = append(out, E("item", T(keyName, k), T(valName, tags[k])))
	}
	return out
}

func b2s(b bool) string  { return strconv.FormatBool(b) }
func i2s(i int32) string { return strconv.Itoa(int(i)) }

func copyTags(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
