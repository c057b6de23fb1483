package fakeaws

// SetSecurityGroupTag sets key=val on the security group named name, as another run (or a
// person in the console) would.
func (s *Server) SetSecurityGroupTag(name, key, val string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.st.sgs {
		if g.name == name {
			g.tags[key] = val
		}
	}
}

// SecurityGroupTags returns the tags of the security group named name (nil if there is none).
func (s *Server) SecurityGroupTags(name string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.st.sgs {
		if g.name == name {
			return copyTags(g.tags)
		}
	}
	return nil
}
