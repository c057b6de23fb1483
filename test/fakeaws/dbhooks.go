package fakeaws

// SecretValue is the SecretString of the secret called name, as GetSecretValue would return it.
// A test reads the master password the provisioner generated and sets it on the real database
// standing behind the fake's instance.
func (s *Server) SecretValue(name string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x, ok := s.st.secrets[name]
	if !ok {
		return "", false
	}
	return x.value, true
}

// SetSecretValue replaces the SecretString of the secret called name (e.g. the value RDS keeps
// in a secret it manages, which the fake leaves empty), reporting whether it exists.
func (s *Server) SetSecretValue(name, value string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	x, ok := s.st.secrets[name]
	if ok {
		x.value = value
	}
	return ok
}

// InstanceEndpoint is the address the fake gave the instance id, for a test that puts a real
// server (with a certificate for that name) behind it.
func (s *Server) InstanceEndpoint(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.st.instances[id]
	if !ok {
		return "", false
	}
	return in.endpoint, true
}
