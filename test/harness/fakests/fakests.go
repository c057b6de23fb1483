// Package fakests is a local AWS STS that implements AssumeRoleWithWebIdentity the way the
// real service does on the wire (AWS Query protocol: form POST in, XML out), so that the real
// SDK credential chain can be pointed at it with AWS_ENDPOINT_URL_STS exactly as IRSA sets up
// a pod. The same server also answers as the EKS Pod Identity agent (GET /v1/credentials with
// the pod's token as Authorization, JSON out) for AWS_CONTAINER_CREDENTIALS_FULL_URI. It remembers every credential it issues so that an RDS stand-in can verify IAM
// tokens signed with them, and it can be made to fail or stall at runtime for fault tests.
package fakests

import (
	"crypto/rand"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

const (
	xmlns = "https://sts.amazonaws.com/doc/2011-06-15/"
	// DefaultRoleARN is the role the server accepts when Options.RoleARN is empty.
	DefaultRoleARN  = "arn:aws:iam::123456789012:role/rds-valet-test"
	defaultDuration = time.Hour
)

// Fault selects how the server misbehaves.
type Fault int

const (
	// Healthy answers normally.
	Healthy Fault = iota
	// Unavailable answers every call with HTTP 503 and an XML ServiceUnavailable error.
	Unavailable
	// Reset closes every connection without an answer, as a crashed endpoint would.
	Reset
	// Refused closes the listener: connections are refused until another fault is set, which
	// listens again on the same address.
	Refused
)

// PodIdentityPath is the path of the Pod Identity credentials endpoint.
const PodIdentityPath = "/v1/credentials"

// Options configure a Server. Zero values give working defaults.
type Options struct {
	// RoleARN is the only role that may be assumed (others get AccessDenied).
	RoleARN string
	// Tokens are the web-identity tokens accepted at start.
	Tokens []string
	// Duration is the lifetime of issued credentials; 0 means one hour. The request's
	// DurationSeconds, when smaller, wins, as on AWS.
	Duration time.Duration
	// Logf, if set, receives one line per call.
	Logf func(format string, args ...any)
	// Now is the clock for expirations; nil means time.Now.
	Now func() time.Time
}

// Credential is one issued set of temporary credentials.
type Credential struct {
	AccessKeyID     string
	SecretAccessKey string
	SessionToken    string
	Expiration      time.Time
	SessionName     string
}

// Server is a running fake STS on 127.0.0.1.
type Server struct {
	// URL is the endpoint to give the SDK as AWS_ENDPOINT_URL_STS.
	URL string

	opts     Options
	addr     string
	srv      *http.Server
	serving  sync.WaitGroup // Serve goroutines (one per listener, old ones ended by Refused)
	closing  chan struct{}  // closed by Close: ends delayed handlers
	handlers sync.WaitGroup
	once     sync.Once
	ln       net.Listener // guarded by mu; nil while Refused

	mu       sync.Mutex
	accepted map[string]bool
	issued   map[string]Credential
	calls    int
	failures int
	fault    Fault
	delay    time.Duration
	duration time.Duration
}

// Start listens on a random loopback port and serves until Close.
func Start(o Options) (*Server, error) {
	if o.RoleARN == "" {
		o.RoleARN = DefaultRoleARN
	}
	if o.Duration == 0 {
		o.Duration = defaultDuration
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fakests: listen: %w", err)
	}
	s := &Server{
		URL:      "http://" + ln.Addr().String(),
		addr:     ln.Addr().String(),
		opts:     o,
		closing:  make(chan struct{}),
		accepted: map[string]bool{},
		issued:   map[string]Credential{},
	}
	s.duration = o.Duration
	for _, t := range o.Tokens {
		s.accepted[t] = true
	}
	// http.Server.Close does not wait for running handlers; the WaitGroup does, so no handler
	// outlives Close (and logs into a finished test).
	s.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		select {
		case <-s.closing:
			s.mu.Unlock()
			return
		default:
		}
		s.handlers.Add(1) // under mu, so never concurrent with Close's Wait at zero
		s.mu.Unlock()
		defer s.handlers.Done()
		if r.URL.Path == PodIdentityPath {
			s.servePodIdentity(w, r)
			return
		}
		s.serveHTTP(w, r)
	})}
	// Without keep-alives every SDK call dials afresh, so Refused refuses at once instead of
	// being bypassed by a pooled connection.
	s.srv.SetKeepAlivesEnabled(false)
	s.serve(ln)
	return s, nil
}

func (s *Server) serve(ln net.Listener) {
	s.ln = ln
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		_ = s.srv.Serve(ln)
	}()
}

// Close stops the server and waits for its serving goroutine and every handler. Calling it
// again is a no-op.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		s.mu.Lock()
		close(s.closing)
		s.mu.Unlock()
		err = s.srv.Close()
		s.serving.Wait()
		s.handlers.Wait()
	})
	return err
}

// RoleARN is the role this server lets callers assume.
func (s *Server) RoleARN() string { return s.opts.RoleARN }

// AcceptToken adds a web-identity token to the accepted set.
func (s *Server) AcceptToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accepted[token] = true
}

// RejectToken removes a token from the accepted set; calls presenting it then fail with
// InvalidIdentityToken, as after the projected token was rotated and the old one expired.
func (s *Server) RejectToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.accepted, token)
}

// RotateToken accepts newToken and rejects every other token.
func (s *Server) RotateToken(newToken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accepted = map[string]bool{newToken: true}
}

// SetFault switches the failure mode at runtime. Leaving Refused listens again on the same
// address, which fails only if another process took the port meanwhile.
func (s *Server) SetFault(f Fault) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closing:
		return errors.New("fakests: closed")
	default:
	}
	s.fault = f
	switch {
	case f == Refused && s.ln != nil:
		err := s.ln.Close()
		s.ln = nil
		if err != nil {
			return fmt.Errorf("fakests: refuse: %w", err)
		}
	case f != Refused && s.ln == nil:
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			return fmt.Errorf("fakests: listen again on %s: %w", s.addr, err)
		}
		s.serve(ln)
	}
	return nil
}

// SetCredentialDuration changes the lifetime of credentials issued from now on, so that a
// test can make the client refresh soon.
func (s *Server) SetCredentialDuration(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.duration = d
}

// SetDelay makes every call wait d (or until the client gives up) before answering.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// Calls is the number of requests received, answered or not.
func (s *Server) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Failures is the number of requests answered with an error or reset.
func (s *Server) Failures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failures
}

// Issued returns every credential issued so far, in no particular order.
func (s *Server) Issued() []Credential {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Credential, 0, len(s.issued))
	for _, c := range s.issued {
		out = append(out, c)
	}
	return out
}

// Lookup returns the secret and session token issued with an access key id. Expired
// credentials are still found: judging a token's age is the verifier's job.
func (s *Server) Lookup(accessKeyID string) (secret, sessionToken string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.issued[accessKeyID]
	return c.SecretAccessKey, c.SessionToken, ok
}

func (s *Server) logf(format string, args ...any) {
	if s.opts.Logf != nil {
		s.opts.Logf("fakests: "+format, args...)
	}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.calls++
	fault, delay := s.fault, s.delay
	s.mu.Unlock()

	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			s.fail()
			return
		case <-s.closing:
			t.Stop()
			return
		}
	}
	switch fault {
	case Unavailable:
		s.fail()
		s.logf("503 (fault injected)")
		writeError(w, http.StatusServiceUnavailable, "Receiver", "ServiceUnavailable", "Service is unavailable (injected fault)")
		return
	case Reset:
		s.reset(w)
		return
	}

	if r.Method != http.MethodPost {
		s.reject(w, http.StatusMethodNotAllowed, "Sender", "InvalidAction", "STS Query API takes POST")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		s.reject(w, http.StatusBadRequest, "Sender", "MalformedInput", err.Error())
		return
	}
	if a := r.PostForm.Get("Action"); a != "AssumeRoleWithWebIdentity" {
		s.reject(w, http.StatusBadRequest, "Sender", "InvalidAction", fmt.Sprintf("Could not find operation %q", a))
		return
	}
	if v := r.PostForm.Get("Version"); v != "2011-06-15" {
		s.reject(w, http.StatusBadRequest, "Sender", "InvalidAction", fmt.Sprintf("unsupported Version %q", v))
		return
	}
	role, session, token := r.PostForm.Get("RoleArn"), r.PostForm.Get("RoleSessionName"), r.PostForm.Get("WebIdentityToken")
	if session == "" {
		s.reject(w, http.StatusBadRequest, "Sender", "ValidationError", "1 validation error detected: RoleSessionName must not be null")
		return
	}
	s.mu.Lock()
	ok := s.accepted[token]
	s.mu.Unlock()
	if !ok {
		s.reject(w, http.StatusBadRequest, "Sender", "InvalidIdentityToken", "Incorrect token audience or the token is expired or unknown")
		return
	}
	if role != s.opts.RoleARN {
		s.reject(w, http.StatusForbidden, "Sender", "AccessDenied", fmt.Sprintf("Not authorized to perform sts:AssumeRoleWithWebIdentity on %s", role))
		return
	}
	s.mu.Lock()
	dur := s.duration
	s.mu.Unlock()
	if ds := r.PostForm.Get("DurationSeconds"); ds != "" {
		var secs int
		if _, err := fmt.Sscanf(ds, "%d", &secs); err != nil || secs <= 0 {
			s.reject(w, http.StatusBadRequest, "Sender", "ValidationError", "invalid DurationSeconds")
			return
		}
		if d := time.Duration(secs) * time.Second; d < dur {
			dur = d
		}
	}
	cred := s.issueFor(session, dur)

	roleName := role[strings.LastIndex(role, "/")+1:]
	account := "123456789012"
	if parts := strings.Split(role, ":"); len(parts) > 4 {
		account = parts[4]
	}
	resp := assumeResponse{
		Xmlns: xmlns,
		Result: assumeResult{
			Subject:  "system:serviceaccount:test:app",
			Audience: "sts.amazonaws.com",
			Provider: "oidc.eks.us-east-1.amazonaws.com/id/TEST",
			User: assumedRoleUser{
				Arn: fmt.Sprintf("arn:aws:sts::%s:assumed-role/%s/%s", account, roleName, session),
				ID:  "AROA" + randString(17, upperAlnum) + ":" + session,
			},
			Credentials: credentialsXML{
				AccessKeyID:     cred.AccessKeyID,
				SecretAccessKey: cred.SecretAccessKey,
				SessionToken:    cred.SessionToken,
				Expiration:      cred.Expiration.Format(time.RFC3339),
			},
		},
		RequestID: requestID(),
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("x-amzn-RequestId", resp.RequestID)
	_, _ = w.Write([]byte(xml.Header))
	_ = xml.NewEncoder(w).Encode(resp)
}

// servePodIdentity answers as the EKS Pod Identity agent: the Authorization header carries
// the pod's token (from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE), and the answer is JSON.
func (s *Server) servePodIdentity(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.calls++
	fault, delay := s.fault, s.delay
	ok := s.accepted[r.Header.Get("Authorization")]
	s.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			s.fail()
			return
		case <-s.closing:
			t.Stop()
			return
		}
	}
	jsonErr := func(status int, code, msg string) {
		s.fail()
		s.logf("pod identity: %d %s: %s", status, code, msg)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"code": code, "message": msg})
	}
	switch {
	case fault == Unavailable:
		jsonErr(http.StatusServiceUnavailable, "ServiceUnavailable", "injected fault")
		return
	case fault == Reset:
		s.reset(w)
		return
	case r.Method != http.MethodGet:
		jsonErr(http.StatusMethodNotAllowed, "InvalidRequest", "GET only")
		return
	case !ok:
		jsonErr(http.StatusForbidden, "AccessDeniedException", "invalid or expired service account token")
		return
	}
	cred := s.issue("pod-identity")
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{
		"AccessKeyId":     cred.AccessKeyID,
		"SecretAccessKey": cred.SecretAccessKey,
		"Token":           cred.SessionToken,
		"AccountId":       "123456789012",
		"Expiration":      cred.Expiration.Format(time.RFC3339),
	})
}

// reset drops the connection without an answer (RST), as a crashed endpoint would.
func (s *Server) reset(w http.ResponseWriter) {
	s.fail()
	s.logf("reset (fault injected)")
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0) // RST rather than FIN
			}
			c.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// issue mints, records and returns a new temporary credential.
func (s *Server) issue(session string) Credential {
	s.mu.Lock()
	dur := s.duration
	s.mu.Unlock()
	return s.issueFor(session, dur)
}

func (s *Server) issueFor(session string, dur time.Duration) Credential {
	cred := Credential{
		AccessKeyID:     "ASIA" + randString(16, upperAlnum),
		SecretAccessKey: randString(40, base64ish),
		SessionToken:    "FQoGZXIvYXdz" + randString(200, base64ish),
		Expiration:      s.opts.Now().UTC().Add(dur).Truncate(time.Second),
		SessionName:     session,
	}
	s.mu.Lock()
	s.issued[cred.AccessKeyID] = cred
	s.mu.Unlock()
	s.logf("issued %s to session %q, expires %s", cred.AccessKeyID, session, cred.Expiration.Format(time.RFC3339))
	return cred
}

func (s *Server) fail() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures++
}

func (s *Server) reject(w http.ResponseWriter, status int, typ, code, msg string) {
	s.fail()
	s.logf("%d %s: %s", status, code, msg)
	writeError(w, status, typ, code, msg)
}

func writeError(w http.ResponseWriter, status int, typ, code, msg string) {
	e := errorResponse{Xmlns: xmlns, Error: errorBody{Type: typ, Code: code, Message: msg}, RequestID: requestID()}
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("x-amzn-RequestId", e.RequestID)
	w.WriteHeader(status)
	_, _ = w.Write([]byte(xml.Header))
	_ = xml.NewEncoder(w).Encode(e)
}

type assumeResponse struct {
	XMLName   xml.Name     `xml:"AssumeRoleWithWebIdentityResponse"`
	Xmlns     string       `xml:"xmlns,attr"`
	Result    assumeResult `xml:"AssumeRoleWithWebIdentityResult"`
	RequestID string       `xml:"ResponseMetadata>RequestId"`
}

type assumeResult struct {
	Subject     string          `xml:"SubjectFromWebIdentityToken"`
	Audience    string          `xml:"Audience"`
	User        assumedRoleUser `xml:"AssumedRoleUser"`
	Credentials credentialsXML  `xml:"Credentials"`
	Provider    string          `xml:"Provider"`
}

type assumedRoleUser struct {
	Arn string `xml:"Arn"`
	ID  string `xml:"AssumedRoleId"`
}

type credentialsXML struct {
	AccessKeyID     string `xml:"AccessKeyId"`
	SecretAccessKey string `xml:"SecretAccessKey"`
	SessionToken    string `xml:"SessionToken"`
	Expiration      string `xml:"Expiration"`
}

type errorResponse struct {
	XMLName   xml.Name  `xml:"ErrorResponse"`
	Xmlns     string    `xml:"xmlns,attr"`
	Error     errorBody `xml:"Error"`
	RequestID string    `xml:"RequestId"`
}

type errorBody struct {
	Type    string `xml:"Type"`
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

const (
	upperAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	base64ish  = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
)

func randString(n int, alphabet string) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

func requestID() string {
	r := randString(32, "0123456789abcdef")
	return r[:8] + "-" + r[8:12] + "-" + r[12:16] + "-" + r[16:20] + "-" + r[20:]
}

// WriteTokenFile writes token as dir/token atomically (rename), as the kubelet replaces a
// projected service-account token, and returns the path for AWS_WEB_IDENTITY_TOKEN_FILE.
// Calling it again with the same dir rotates the token in place.
func WriteTokenFile(dir, token string) (string, error) {
	p := filepath.Join(dir, "token")
	tmp, err := os.CreateTemp(dir, ".token-*")
	if err != nil {
		return "", fmt.Errorf("fakests: token file: %w", err)
	}
	_, werr := tmp.WriteString(token)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("fakests: write token file: %w", err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return "", fmt.Errorf("fakests: token file: %w", err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return "", fmt.Errorf("fakests: token file: %w", err)
	}
	return p, nil
}

// NewToken returns a random JWT-shaped token (the SDK treats it as opaque).
func NewToken() string {
	return "eyJhbGciOiJSUzI1NiJ9." + randString(64, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") + "." + randString(43, "abcdefghijklmnopqrstuvwxyz0123456789")
}
