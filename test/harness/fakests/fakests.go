// Package fakests is a local AWS STS that implements AssumeRoleWithWebIdentity the way the
// real service does on the wire (AWS Query protocol: form POST in, XML out), so that the real
// SDK credential chain can be pointed at it with AWS_ENDPOINT_URL_STS exactly as IRSA sets up
// a pod. The same server also answers as the EKS Pod Identity agent (GET /v1/credentials with
// the pod's token as Authorization, JSON out) for AWS_CONTAINER_CREDENTIALS_FULL_URI.
//
// It is also the cluster's OIDC issuer: the ServiceAccount tokens are JWTs it signs (Token,
// NewToken), and before it issues credentials it verifies them and evaluates the role's trust
// policy as AWS does (test/harness/awsiam). It remembers every credential it issues and the
// role behind it, so that an RDS stand-in can verify IAM tokens signed with them (Lookup) and
// the role's rds-db:connect permission (Authorized); it can be made to fail or stall at
// runtime for fault tests.
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
	"sync"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/awsiam"
)

const (
	xmlns = "https://sts.amazonaws.com/doc/2011-06-15/"
	// DefaultRoleARN is the role when Options.RoleARN is empty.
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
	// RoleARN is the only role that exists (others get AccessDenied); its account holds the
	// IAM OIDC provider for the issuer.
	RoleARN string
	// Issuer is the OIDC issuer URL the tokens carry as iss; empty means
	// https://oidc.eks.us-east-1.amazonaws.com/id/ and a random cluster id.
	Issuer string
	// Subject is the sub of the tokens NewToken mints and the ServiceAccount of the one Pod
	// Identity association (to RoleARN); empty means DefaultSubject.
	Subject string
	// TokenLifetime is the validity of minted tokens; 0 means 24 hours.
	TokenLifetime time.Duration
	// Trust is the role's trust policy; empty means the provisioner's IRSA trust for Subject
	// (awsiam.IRSATrust) together with the Pod Identity trust (awsiam.PodIdentityTrust).
	Trust string
	// Policies are the role's permission policies, which Authorized evaluates.
	Policies []string
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
	RoleARN         string // the role the credential is a session of
}

// Server is a running fake STS on 127.0.0.1.
type Server struct {
	// URL is the endpoint to give the SDK as AWS_ENDPOINT_URL_STS.
	URL string

	opts     Options
	id       identity
	addr     string
	srv      *http.Server
	serving  sync.WaitGroup // Serve goroutines (one per listener, old ones ended by Refused)
	closing  chan struct{}  // closed by Close: ends delayed handlers
	handlers sync.WaitGroup
	once     sync.Once
	ln       net.Listener // guarded by mu; nil while Refused

	mu       sync.Mutex
	minted   map[string]bool // every token Token signed
	rejected map[string]bool // tokens answered as expired
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
	if o.Subject == "" {
		o.Subject = DefaultSubject
	}
	if o.TokenLifetime == 0 {
		o.TokenLifetime = defaultTokenLifetime
	}
	id, err := newIdentity(o)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fakests: listen: %w", err)
	}
	s := &Server{
		URL:      "http://" + ln.Addr().String(),
		addr:     ln.Addr().String(),
		opts:     o,
		id:       id,
		closing:  make(chan struct{}),
		minted:   map[string]bool{},
		rejected: map[string]bool{},
		issued:   map[string]Credential{},
	}
	s.duration = o.Duration
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

// RoleARN is the role this server lets callers assume (when its trust policy allows).
func (s *Server) RoleARN() string { return s.opts.RoleARN }

// AcceptToken takes a token back from the rejected set. Only tokens signed by this server's
// issuer (Token) verify at all.
func (s *Server) AcceptToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.rejected, token)
}

// RejectToken makes calls presenting the token fail with ExpiredTokenException, as after the
// projected token was rotated and the old one expired.
func (s *Server) RejectToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rejected[token] = true
}

// RotateToken accepts newToken and rejects every other token this server minted.
func (s *Server) RotateToken(newToken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t := range s.minted {
		s.rejected[t] = t != newToken
	}
	delete(s.rejected, newToken)
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
	// https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html:
	// the token is verified first (InvalidIdentityToken, ExpiredTokenException, 400), then the
	// role's trust policy must allow sts:AssumeRoleWithWebIdentity for Federated = the
	// provider's ARN with PROVIDER:sub and PROVIDER:aud; a role that does not exist or does
	// not trust the token is AccessDenied (403).
	cl, err := s.verifyToken(token, accountOf(role), STSAudience)
	if err != nil {
		te := tokenError(err)
		s.reject(w, http.StatusBadRequest, "Sender", te.Code, te.Message)
		return
	}
	if role != s.opts.RoleARN || !s.trusts(awsiam.WebIdentityRequest(awsiam.Provider{ARN: s.id.providerARN, Host: s.id.host}, cl)) {
		s.reject(w, http.StatusForbidden, "Sender", "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
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
	cred := s.issueFor(role, session, dur)

	resp := assumeResponse{
		Xmlns: xmlns,
		Result: assumeResult{
			Subject:  cl.Sub,
			Audience: cl.Aud[0],
			Provider: cl.Iss, // "For OpenID Connect ID tokens, this contains the value of the iss field."
			User: assumedRoleUser{
				Arn: cred.sessionARN(),
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
// the pod's token (from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE), and the answer is JSON. The
// agent hands the token to EKS Auth's AssumeRoleForPodIdentity
// (https://docs.aws.amazon.com/eks/latest/APIReference/API_auth_AssumeRoleForPodIdentity.html),
// which is modelled here: the token must be the cluster's, signed, unexpired, for the
// pods.eks.amazonaws.com audience (InvalidTokenException, ExpiredTokenException); its
// ServiceAccount must have an association (one: Options.Subject -> the role; else
// ResourceNotFoundException); the role must trust pods.eks.amazonaws.com with sts:AssumeRole
// and sts:TagSession (AccessDeniedException).
func (s *Server) servePodIdentity(w http.ResponseWriter, r *http.Request) {
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
	}
	cl, err := s.verifyToken(r.Header.Get("Authorization"), s.id.account, PodIdentityAudience)
	if err != nil {
		te := tokenError(err)
		code := te.Code
		if code == "InvalidIdentityToken" {
			code = "InvalidTokenException" // EKS Auth's name for it
		}
		jsonErr(http.StatusBadRequest, code, te.Message)
		return
	}
	if cl.Sub != s.opts.Subject {
		jsonErr(http.StatusNotFound, "ResourceNotFoundException", "no Pod Identity association for "+cl.Sub)
		return
	}
	for _, a := range []string{"sts:AssumeRole", "sts:TagSession"} {
		if !s.trusts(awsiam.Request{Principal: &awsiam.Principal{Kind: "Service", ID: PodIdentityAudience}, Action: a}) {
			jsonErr(http.StatusForbidden, "AccessDeniedException", "the role's trust policy does not allow pods.eks.amazonaws.com to "+a)
			return
		}
	}
	cred := s.issue(s.opts.RoleARN, "pod-identity")
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{
		"AccessKeyId":     cred.AccessKeyID,
		"SecretAccessKey": cred.SecretAccessKey,
		"Token":           cred.SessionToken,
		"AccountId":       s.id.account,
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

// issue mints, records and returns a new temporary credential for a session of role.
func (s *Server) issue(role, session string) Credential {
	s.mu.Lock()
	dur := s.duration
	s.mu.Unlock()
	return s.issueFor(role, session, dur)
}

func (s *Server) issueFor(role, session string, dur time.Duration) Credential {
	cred := Credential{
		AccessKeyID:     "ASIA" + randString(16, upperAlnum),
		SecretAccessKey: randString(40, base64ish),
		SessionToken:    "FQoGZXIvYXdz" + randString(200, base64ish),
		Expiration:      s.opts.Now().UTC().Add(dur).Truncate(time.Second),
		SessionName:     session,
		RoleARN:         role,
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
