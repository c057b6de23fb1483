package fakeaws

// Test hooks for the RDS, RDS Proxy and Secrets Manager behaviours modelled in rds.go,
// proxyauth.go, paramgroup.go and iam.go.

// liveSecrets counts the secrets not scheduled for deletion: Counts is the duplicate detector,
// and a secret waiting out its recovery window is not a duplicate.
func (st *state) liveSecrets() int {
	n := 0
	for _, x := range st.secrets {
		if x.deletedDate == 0 {
			n++
		}
	}
	return n
}

// SecretScheduledForDeletion reports whether the named secret exists and waits out its
// recovery window (DescribeSecret shows DeletedDate).
func (s *Server) SecretScheduledForDeletion(name string) (exists, scheduled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.st.secrets[name]
	if x == nil {
		return false, false
	}
	return true, x.deletedDate != 0
}

// ProxyTargetHealth is what DescribeDBProxyTargets would report now for the instance behind
// the proxy, without counting as a poll.
func (s *Server) ProxyTargetHealth(proxyName, instanceID string) (state, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, in := s.st.proxies[proxyName], s.st.instances[instanceID]
	if p == nil || in == nil || !contains(p.targets, instanceID) {
		return "", ""
	}
	if p.registering[instanceID] > 0 {
		return "REGISTERING", ""
	}
	state, reason, _ = s.st.targetHealth(p, in)
	return state, reason
}

// ProxyDefaultAuthScheme is the proxy's DefaultAuthScheme (NONE or IAM_AUTH).
func (s *Server) ProxyDefaultAuthScheme(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.st.proxies[name]; p != nil {
		return scheme(p)
	}
	return ""
}

// SetRolePolicy puts an inline policy on a role behind the provisioner's back (e.g. a guard
// rail someone attached); an empty doc removes it.
func (s *Server) SetRolePolicy(role, policyName, doc string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := s.st.roles[role]; r != nil {
		if doc == "" {
			delete(r.policies, policyName)
			return
		}
		r.policies[policyName] = doc
	}
}

// InstanceStorage is the instance's lifecycle status, storage settings and parameter group.
type InstanceStorage struct {
	Status                         string
	AllocatedGB, MaxAllocatedGB    int32
	ParameterGroup, ParameterApply string
}

func (s *Server) InstanceStorage(id string) (InstanceStorage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.st.instances[id]
	if in == nil {
		return InstanceStorage{}, false
	}
	return InstanceStorage{Status: in.status, AllocatedGB: in.storage, MaxAllocatedGB: in.maxStorage,
		ParameterGroup: in.paramGroup, ParameterApply: in.paramApply}, true
}
