package fakeaws

import (
	"sort"
	"strconv"
	"strings"
)

// The methods below let tests look at and tamper with the fake's state directly (drift, proxy
// IP changes, seeded foreign resources), the way an operator or AWS itself would.

// InstanceInfo is a DB instance as the fake holds it.
type InstanceInfo struct {
	ID, Class, Status, SubnetGroup, Engine, KMS, ResourceID, SecretARN string
	DeletionProtection, IAMAuth, Encrypted, MultiAZ                    bool
	SecurityGroups                                                     []string
	Tags                                                               map[string]string
}

// ProxyInfo is an RDS Proxy as the fake holds it.
type ProxyInfo struct {
	Name, ARN, RoleARN, Endpoint, Status, EngineFamily string
	RequireTLS                                         bool
	Auth                                               []map[string]string
	Targets, IPs, SecurityGroups                       []string
	Tags                                               map[string]string
}

// RoleInfo is an IAM role.
type RoleInfo struct {
	Name, Path, ARN, Trust string
	Policies, Tags         map[string]string
}

// ServiceInfo is a VPC endpoint service.
type ServiceInfo struct {
	ID, Name           string
	AcceptanceRequired bool
	NLBs, Principals   []string
	Tags               map[string]string
}

func (s *Server) Instance(id string) (InstanceInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.st.instances[id]
	if in == nil {
		return InstanceInfo{}, false
	}
	return InstanceInfo{ID: in.id, Class: in.class, Status: in.status, SubnetGroup: in.subnetGroup, Engine: in.engine, KMS: in.kms,
		ResourceID: in.resID, SecretARN: in.secretArn, DeletionProtection: in.delProt, IAMAuth: in.iamAuth, Encrypted: in.encrypted,
		MultiAZ: in.multiAZ, SecurityGroups: append([]string(nil), in.sgs...), Tags: copyTags(in.tags)}, true
}

func (s *Server) Proxy(name string) (ProxyInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.st.proxies[name]
	if p == nil {
		return ProxyInfo{}, false
	}
	var auth []map[string]string
	for _, a := range p.auth {
		auth = append(auth, copyTags(a))
	}
	return ProxyInfo{Name: p.name, ARN: p.arn, RoleARN: p.roleArn, Endpoint: p.endpoint, Status: p.status, EngineFamily: p.engineFamily,
		RequireTLS: p.requireTLS, Auth: auth, Targets: append([]string(nil), p.targets...), IPs: append([]string(nil), p.ips...),
		SecurityGroups: append([]string(nil), p.sgs...), Tags: copyTags(p.tags)}, true
}

// SetProxyIPs replaces the proxy's ENI addresses, as happens when AWS moves the proxy.
func (s *Server) SetProxyIPs(name string, ips []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.st.proxies[name]; p != nil {
		p.ips = append([]string(nil), ips...)
	}
}

func (s *Server) Role(name string) (RoleInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.st.roles[name]
	if r == nil {
		return RoleInfo{}, false
	}
	return RoleInfo{Name: r.name, Path: r.path, ARN: r.arn, Trust: r.trust, Policies: copyTags(r.policies), Tags: copyTags(r.tags)}, true
}

// RoleNames lists every role.
func (s *Server) RoleNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedKeys(s.st.roles)
}

// SecretARNs lists every secret by name -> ARN.
func (s *Server) Secrets() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for n, x := range s.st.secrets {
		out[n] = x.arn
	}
	return out
}

// TargetIPs is the registered targets of the named target group, sorted.
func (s *Server) TargetIPs(tgName string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tg := range s.st.tgs {
		if tg.name == tgName {
			var ips []string
			for ip, t := range tg.targets {
				if t.state != "draining" {
					ips = append(ips, ip)
				}
			}
			sort.Strings(ips)
			return ips
		}
	}
	return nil
}

// TargetStates is every target of the named target group (draining ones too) -> its state.
func (s *Server) TargetStates(tgName string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for _, tg := range s.st.tgs {
		if tg.name == tgName {
			for ip, t := range tg.targets {
				out[ip] = t.state
			}
		}
	}
	return out
}

// LoadBalancerAttributes returns the named NLB's attributes.
func (s *Server) LoadBalancerAttributes(name string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, lb := range s.st.lbs {
		if lb.name == name {
			return copyTags(lb.attrs)
		}
	}
	return nil
}

// TargetGroupAttributes returns the named target group's attributes plus its health check
// as hc.interval, hc.timeout, hc.healthy, hc.unhealthy.
func (s *Server) TargetGroupAttributes(name string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tg := range s.st.tgs {
		if tg.name == name {
			out := copyTags(tg.attrs)
			out["hc.interval"], out["hc.timeout"] = strconv.Itoa(tg.hc.interval), strconv.Itoa(tg.hc.timeout)
			out["hc.healthy"], out["hc.unhealthy"] = strconv.Itoa(tg.hc.hthr), strconv.Itoa(tg.hc.ut)
			return out
		}
	}
	return nil
}

// SetLoadBalancerAttribute changes one NLB attribute behind the provisioner's back (drift).
func (s *Server) SetLoadBalancerAttribute(name, key, val string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, lb := range s.st.lbs {
		if lb.name == name {
			lb.attrs[key] = val
		}
	}
}

// SetTargetGroupAttribute changes one target group attribute behind the provisioner's back.
func (s *Server) SetTargetGroupAttribute(name, key, val string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tg := range s.st.tgs {
		if tg.name == name {
			tg.attrs[key] = val
		}
	}
}

// DropTarget deregisters one target behind the provisioner's back (drift).
func (s *Server) DropTarget(tgName, ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, tg := range s.st.tgs {
		if tg.name == tgName {
			delete(tg.targets, ip)
		}
	}
}

// SetInstanceTag changes a tag on the instance behind the provisioner's back (drift).
func (s *Server) SetInstanceTag(id, key, val string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in := s.st.instances[id]; in != nil {
		in.tags[key] = val
	}
}

// LoadBalancer returns the NLB's ARN, subnets and security groups by name.
func (s *Server) LoadBalancer(name string) (arn string, subnets, sgs []string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, lb := range s.st.lbs {
		if lb.name == name {
			return lb.arn, lb.subnets, lb.sgs, true
		}
	}
	return "", nil, nil, false
}

// ListenerTargets maps each listener (port) on the named NLB to its target group name.
func (s *Server) ListenerTargets(lbName string) map[int32]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[int32]string{}
	for _, l := range s.st.listeners {
		if lb := s.st.lbs[l.lbArn]; lb != nil && lb.name == lbName {
			if tg := s.st.tgs[l.tgArn]; tg != nil {
				out[l.port] = tg.name
			}
		}
	}
	return out
}

// Services lists VPC endpoint services.
func (s *Server) Services() []ServiceInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ServiceInfo
	for _, k := range sortedKeys(s.st.services) {
		x := s.st.services[k]
		out = append(out, ServiceInfo{ID: x.id, Name: x.name, AcceptanceRequired: x.acceptance, NLBs: append([]string(nil), x.nlbs...),
			Principals: append([]string(nil), x.principals...), Tags: copyTags(x.tags)})
	}
	return out
}

// Endpoints lists VPC endpoints: id -> state.
func (s *Server) Endpoints() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for id, e := range s.st.endpoints {
		out[id] = e.status
	}
	return out
}

// SecurityGroup returns a security group's name, ingress rules and tags by id.
func (s *Server) SecurityGroups() map[string]map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]map[string]string{}
	for id, g := range s.st.sgs {
		out[id] = map[string]string{"name": g.name, "vpc": g.vpc, "rules": strings.Join(sortedKeys(g.rules), ",")}
		for k, v := range g.tags {
			out[id]["tag:"+k] = v
		}
	}
	return out
}

// Counts returns how many resources of each kind exist: the duplicate detector.
func (s *Server) Counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return map[string]int{"subnet-group": len(s.st.subnetGroups), "db-instance": len(s.st.instances), "db-proxy": len(s.st.proxies),
		"secret": s.st.liveSecrets(), "iam-role": len(s.st.roles), "security-group": len(s.st.sgs), "load-balancer": len(s.st.lbs),
		"target-group": len(s.st.tgs), "listener": len(s.st.listeners), "endpoint-service": len(s.st.services), "vpc-endpoint": len(s.st.endpoints)}
}

// SeedRole places a role that the provisioner did not create (no ownership tags unless given).
func (s *Server) SeedRole(name, path, trust string, tags map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.roles[name] = &role{name: name, path: path, arn: "arn:aws:iam::" + s.cfg.AccountID + ":role" + path + name,
		id: "AROASEEDED" + name, trust: trust, policies: map[string]string{}, tags: copyTags(tags)}
}

// SeedSecurityGroup places a security group the provisioner did not create (id "" = generate
// one); returns its id.
func (s *Server) SeedSecurityGroup(id, name, vpc string, tags map[string]string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id == "" {
		id = s.st.id("sg-", 17)
	}
	g := &secGroup{id: id, name: name, vpc: vpc, desc: "seeded", rules: map[string]bool{}, tags: copyTags(tags)}
	s.st.sgs[g.id] = g
	return g.id
}

// TamperTag sets key=val on every resource that carries tags, as a careless console user might.
func (s *Server) TamperTag(key, val string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	var all []map[string]string
	for _, x := range st.subnetGroups {
		all = append(all, x.tags)
	}
	for _, x := range st.instances {
		all = append(all, x.tags)
	}
	for _, x := range st.proxies {
		all = append(all, x.tags)
	}
	for _, x := range st.secrets {
		all = append(all, x.tags)
	}
	for _, x := range st.roles {
		all = append(all, x.tags)
	}
	for _, x := range st.sgs {
		all = append(all, x.tags)
	}
	for _, x := range st.lbs {
		all = append(all, x.tags)
	}
	for _, x := range st.tgs {
		all = append(all, x.tags)
	}
	for _, x := range st.listeners {
		all = append(all, x.tags)
	}
	for _, x := range st.services {
		all = append(all, x.tags)
	}
	for _, x := range st.endpoints {
		all = append(all, x.tags)
	}
	for _, x := range st.paramGroups {
		all = append(all, x.tags)
	}
	for _, t := range all {
		if t != nil && t[key] != "" {
			t[key] = val
		}
	}
}
