package fakeaws

// InjectErrorAfter makes the next n calls of service/action ("" = any) execute and then answer
// with code and status anyway, as when AWS did the work but the answer was lost (a 500 or a
// dropped connection): the SDK retries such a call, which is what ClientToken is for.
func (s *Server) InjectErrorAfter(service, action, code, msg string, status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.after = append(s.after, &inject{service: service, action: action, code: code, msg: msg, status: status, left: n})
}

func (s *Server) takeInjectAfter(service, action string) *inject {
	for _, in := range s.after {
		if in.left > 0 && (in.service == "" || in.service == service) && (in.action == "" || in.action == action) {
			in.left--
			cp := *in
			return &cp
		}
	}
	return nil
}

// RejectPendingConnections rejects every endpoint connection waiting for acceptance, as a
// service owner in the console might.
func (s *Server) RejectPendingConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, svc := range s.st.services {
		for id := range svc.pendingConnections {
			if e := s.st.endpoints[id]; e != nil {
				e.set("rejected", "")
			}
			delete(svc.pendingConnections, id)
		}
	}
}

// DuplicateEndpoint copies the VPC endpoint id under newID, created a second after the newest
// endpoint (a duplicate left by an earlier tool); newID lets a test choose how it sorts.
func (s *Server) DuplicateEndpoint(id, newID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.st.endpoints[id]
	if e == nil {
		return
	}
	cp := *e
	cp.id, cp.tags, cp.subnets, cp.sgs = newID, copyTags(e.tags), append([]string(nil), e.subnets...), append([]string(nil), e.sgs...)
	for _, x := range s.st.endpoints {
		if !x.created.Before(cp.created) {
			cp.created = x.created.Add(1e9)
		}
	}
	s.st.endpoints[newID] = &cp
}
