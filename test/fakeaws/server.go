// Package fakeaws is a local stand-in for the AWS APIs the provisioner calls (RDS, IAM, EC2,
// ELBv2, Secrets Manager, KMS, STS). It speaks the real wire protocols (AWS Query and EC2 Query with
// XML responses, JSON 1.1 for Secrets Manager and KMS), verifies SigV4 signatures, keeps state, enforces
// the preconditions AWS enforces, and can inject throttling and errors. The real SDK reaches it
// through AWS_ENDPOINT_URL, so every call is serialized, signed and parsed for real.
//
// Resources move through their lifecycle (creating -> available, deleting -> gone) on Describe
// calls, not on wall-clock time, so waiters finish fast and tests never sleep.
package fakeaws

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Config sets up a fake.
type Config struct {
	AccountID string // the account the static credentials belong to
	Region    string
	AccessKey string
	SecretKey string
	// ReadyAfter is how many Describe calls see a resource in a transitional state
	// (creating, modifying, deleting) before it settles. Default 2.
	ReadyAfter int
}

// Call is one API call the fake served (or refused).
type Call struct {
	Service string
	Action  string
	Status  int
	Code    string // error code when the call failed
	Mutates bool
	// TagKeys are the tag keys an EC2 CreateTags/DeleteTags call wrote, so a test can tell the
	// provisioner's apply lease (rdsvalet.io/lease) from a change to the resources.
	TagKeys []string
	Caller  string // the access key id that signed it; "" for an unsigned call
}

// creds are an access key's secret and account; temporary ones (from STS) also carry their
// session token and the role session they belong to.
type creds struct {
	secret, account           string
	roleARN, roleID, roleName string
	session, sessionToken     string
}

// Server is a running fake. All state is behind mu.
type Server struct {
	cfg Config
	ln  net.Listener
	srv *http.Server
	URL string

	mu        sync.Mutex
	creds     map[string]creds
	calls     []Call
	injects   []*inject
	after     []*inject
	hooks     map[string][]func()
	seq       int
	st        *state
	authFails int
}

type inject struct {
	service, action string // "" matches any
	code, msg       string
	status          int
	left            int
}

// Start listens on 127.0.0.1 on a random port.
func Start(cfg Config) (*Server, error) {
	if cfg.ReadyAfter == 0 {
		cfg.ReadyAfter = 2
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fakeaws listen: %w", err)
	}
	s := &Server{cfg: cfg, ln: ln, URL: "http://" + ln.Addr().String(),
		creds: map[string]creds{cfg.AccessKey: {secret: cfg.SecretKey, account: cfg.AccountID}},
		hooks: map[string][]func(){}, st: newState()}
	s.st.readyAfter = cfg.ReadyAfter
	s.st.home = cfg.Region
	s.srv = &http.Server{Handler: s}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

// InjectError makes the next n calls of service/action ("" = any) fail with code and message.
func (s *Server) InjectError(service, action, code, msg string, status, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.injects = append(s.injects, &inject{service: service, action: action, code: code, msg: msg, status: status, left: n})
}

// InjectThrottle makes the next n calls of service/action fail the way AWS throttles: 400
// Throttling for Query services, 400 ThrottlingException for JSON ones; every third one is a
// bare 429, which the SDK also retries.
func (s *Server) InjectThrottle(service, action string, n int) {
	s.InjectError(service, action, "Throttling", "Rate exceeded", 400, n)
}

// OnCall runs f (without the lock held) after the fake has executed the named action, before the
// response is written: a test can kill the client right there, like a crash mid-apply.
func (s *Server) OnCall(action string, f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks[action] = append(s.hooks[action], f)
}

// Calls returns every call served so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// ResetCalls clears the call log.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
}

// AuthFailures counts requests refused for a bad or missing signature.
func (s *Server) AuthFailures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authFails
}

// apiError is an AWS error response.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

var mutatingPrefixes = []string{"Create", "Delete", "Modify", "Register", "Deregister", "Authorize", "Revoke", "Put", "Add", "Remove", "Tag", "Untag", "Update", "Accept", "Set"}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	service, akid, aerr := s.verifySigV4(r, body)
	if aerr != nil && isUnsignedSTS(r, body) {
		// AssumeRoleWithWebIdentity is called without AWS credentials: the token is the proof.
		service, akid, aerr = "sts", "", nil
	}
	if aerr != nil {
		s.mu.Lock()
		s.authFails++
		s.mu.Unlock()
		writeErr(w, "query", "", aerr)
		return
	}
	proto, action := "query", ""
	var form url.Values
	var jbody map[string]any
	var rest *restReq
	switch {
	case service == "eks":
		// REST-JSON: the operation is the method and path (eks.go).
		proto = "rest-json"
		action, rest = eksRoute(r.Method, r.URL.EscapedPath(), r.URL.Query())
		if len(body) > 0 {
			if err := json.Unmarshal(body, &jbody); err != nil {
				writeErr(w, proto, action, errf(400, "BadRequestException", "bad JSON: %v", err))
				return
			}
		}
	case service == "secretsmanager" || service == "kms":
		proto = "json"
		action = strings.TrimPrefix(strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "secretsmanager."), "TrentService.")
		if err := json.Unmarshal(body, &jbody); err != nil {
			writeErr(w, proto, action, errf(400, "SerializationException", "bad JSON: %v", err))
			return
		}
	default:
		if service == "ec2" {
			proto = "ec2"
		}
		form, err = url.ParseQuery(string(body))
		if err != nil {
			writeErr(w, proto, action, errf(400, "MalformedQueryString", "%v", err))
			return
		}
		action = form.Get("Action")
	}
	mut := false
	for _, p := range mutatingPrefixes {
		if strings.HasPrefix(action, p) {
			mut = true
		}
	}
	s.mu.Lock()
	caller := s.creds[akid]
	if in := s.takeInject(service, action); in != nil {
		s.calls = append(s.calls, Call{Service: service, Action: action, Status: in.status, Code: in.code, Caller: akid})
		s.mu.Unlock()
		if in.code == "Throttling" && proto == "json" {
			in.code = "ThrottlingException"
		}
		writeErr(w, proto, action, &apiError{status: in.status, code: in.code, msg: in.msg})
		return
	}
	if den := s.denyByRolePolicy(service, proto, action, caller); den != nil {
		s.calls = append(s.calls, Call{Service: service, Action: action, Status: den.status, Code: den.code, Caller: akid})
		s.mu.Unlock()
		writeErr(w, proto, action, den)
		return
	}
	ctx := &reqCtx{s: s, form: form, json: jbody, account: caller.account, region: s.cfg.Region, caller: caller, rest: rest}
	if service == "rds" {
		// RDS is regional: the Region is the one the request was signed for (a cross-Region
		// read replica is created by a call to the destination Region).
		if m := authRE.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
			ctx.region = m[3]
		}
	}
	var out any
	var aerr2 *apiError
	switch service {
	case "rds":
		out, aerr2 = s.st.rds(ctx, action)
	case "ec2":
		out, aerr2 = s.st.ec2(ctx, action)
	case "elasticloadbalancing":
		out, aerr2 = s.st.elb(ctx, action)
	case "iam":
		out, aerr2 = s.st.iam(ctx, action)
	case "secretsmanager":
		out, aerr2 = s.st.secretsAPI(ctx, action)
	case "kms":
		out, aerr2 = s.st.kms(ctx, action)
	case "sts":
		out, aerr2 = s.st.sts(ctx, action)
	case "eks":
		out, aerr2 = s.st.eksAPI(ctx, action)
	default:
		aerr2 = errf(400, "UnknownService", "fakeaws does not speak %q", service)
	}
	status, code := 200, ""
	if aerr2 != nil {
		status, code = aerr2.status, aerr2.code
	}
	executed := aerr2 == nil
	if executed {
		// The call was done but its answer is lost (see InjectErrorAfter).
		if in := s.takeInjectAfter(service, action); in != nil {
			aerr2 = &apiError{status: in.status, code: in.code, msg: in.msg}
			status, code = in.status, in.code
		}
	}
	call := Call{Service: service, Action: action, Status: status, Code: code, Mutates: mut && executed, Caller: akid}
	if service == "ec2" && (action == "CreateTags" || action == "DeleteTags") {
		for _, t := range ctx.structs("Tag") {
			call.TagKeys = append(call.TagKeys, t["Key"])
		}
	}
	s.calls = append(s.calls, call)
	hooks := s.hooks[action]
	s.mu.Unlock()
	for _, h := range hooks {
		h()
	}
	if aerr2 != nil {
		writeErr(w, proto, action, aerr2)
		return
	}
	switch proto {
	case "json":
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_ = json.NewEncoder(w).Encode(out)
	case "rest-json":
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	case "ec2":
		w.Header().Set("Content-Type", "text/xml")
		x := E(action+"Response", T("requestId", "req-1"))
		if n, ok := out.([]X); ok {
			x.kids = append(x.kids, n...)
		}
		_, _ = w.Write([]byte(xml.Header + x.String()))
	default:
		w.Header().Set("Content-Type", "text/xml")
		res := E(action + "Result")
		if n, ok := out.([]X); ok {
			res.kids = n
		}
		x := E(action+"Response", res, E("ResponseMetadata", T("RequestId", "req-1")))
		_, _ = w.Write([]byte(xml.Header + x.String()))
	}
}

func (s *Server) takeInject(service, action string) *inject {
	for _, in := range s.injects {
		if in.left > 0 && (in.service == "" || in.service == service) && (in.action == "" || in.action == action) {
			in.left--
			cp := *in
			s.seq++
			if cp.code == "Throttling" && s.seq%3 == 0 {
				cp.status = http.StatusTooManyRequests
			}
			return &cp
		}
	}
	return nil
}

func writeErr(w http.ResponseWriter, proto, action string, e *apiError) {
	switch proto {
	case "json", "rest-json":
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.Header().Set("X-Amzn-ErrorType", e.code)
		w.WriteHeader(e.status)
		_ = json.NewEncoder(w).Encode(map[string]string{"__type": e.code, "message": e.msg})
	case "ec2":
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(e.status)
		x := E("Response", E("Errors", E("Error", T("Code", e.code), T("Message", e.msg))), T("RequestID", "req-err"))
		_, _ = w.Write([]byte(xml.Header + x.String()))
	default:
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(e.status)
		x := E("ErrorResponse", E("Error", T("Type", "Sender"), T("Code", e.code), T("Message", e.msg)), T("RequestId", "req-err"))
		_, _ = w.Write([]byte(xml.Header + x.String()))
	}
}

var authRE = regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$`)

// verifySigV4 recomputes the signature from the request and the secret key of the access key
// id, exactly as AWS does, and returns the service from the credential scope.
func (s *Server) verifySigV4(r *http.Request, body []byte) (service, akid string, _ *apiError) {
	m := authRE.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		return "", "", errf(403, "IncompleteSignature", "missing or malformed SigV4 Authorization header")
	}
	akid, date, region, service, signed, sig := m[1], m[2], m[3], m[4], m[5], m[6]
	s.mu.Lock()
	c, ok := s.creds[akid]
	s.mu.Unlock()
	if !ok {
		return "", "", errf(403, "InvalidClientTokenId", "The security token included in the request is invalid.")
	}
	amzDate := r.Header.Get("X-Amz-Date")
	if !strings.HasPrefix(amzDate, date) {
		return "", "", errf(403, "IncompleteSignature", "X-Amz-Date does not match the credential scope date")
	}
	payloadHash := r.Header.Get("X-Amz-Content-Sha256")
	if payloadHash == "" {
		h := sha256.Sum256(body)
		payloadHash = hex.EncodeToString(h[:])
	}
	var ch strings.Builder
	for _, h := range strings.Split(signed, ";") {
		var v string
		switch h {
		case "host":
			v = r.Host
		case "content-length":
			v = strconv.FormatInt(r.ContentLength, 10)
		default:
			v = strings.Join(r.Header.Values(h), ",")
		}
		ch.WriteString(h + ":" + strings.Join(strings.Fields(v), " ") + "\n")
	}
	q := r.URL.Query()
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var qs []string
	for _, k := range keys {
		for _, v := range q[k] {
			qs = append(qs, awsEscape(k)+"="+awsEscape(v))
		}
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	// Every service but S3 URI-encodes each path segment twice in the canonical request
	// ("Create a canonical request for Signature Version 4"); REST paths such as EKS's
	// /tags/{arn} carry escapes.
	segs := strings.Split(path, "/")
	for i, sg := range segs {
		segs[i] = awsEscape(sg)
	}
	path = strings.Join(segs, "/")
	creq := strings.Join([]string{r.Method, path, strings.Join(qs, "&"), ch.String(), signed, payloadHash}, "\n")
	scope := date + "/" + region + "/" + service + "/aws4_request"
	hc := sha256.Sum256([]byte(creq))
	sts := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(hc[:])
	k := hmacSHA([]byte("AWS4"+c.secret), date)
	k = hmacSHA(k, region)
	k = hmacSHA(k, service)
	k = hmacSHA(k, "aws4_request")
	want := hex.EncodeToString(hmacSHA(k, sts))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return "", "", errf(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
	}
	// Temporary credentials are only valid with their session token
	// (https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_use-resources.html).
	if c.sessionToken != "" && r.Header.Get("X-Amz-Security-Token") != c.sessionToken {
		return "", "", errf(403, "InvalidClientTokenId", "The security token included in the request is invalid.")
	}
	return service, akid, nil
}

func hmacSHA(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

func awsEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// X is a minimal XML element for responses.
type X struct {
	name string
	text string
	kids []X
}

// E is an element with children; T is an element with text.
func E(name string, kids ...X) X { return X{name: name, kids: kids} }
func T(name, text string) X      { return X{name: name, text: text} }

// Items renders a list whose members are all named member.
func Items(name, member string, items []X) X {
	x := X{name: name}
	for _, it := range items {
		it.name = member
		x.kids = append(x.kids, it)
	}
	return x
}

// Strs renders a list of strings.
func Strs(name, member string, vals []string) X {
	x := X{name: name}
	for _, v := range vals {
		x.kids = append(x.kids, T(member, v))
	}
	return x
}

func (x X) String() string {
	var b bytes.Buffer
	x.write(&b)
	return b.String()
}

func (x X) write(b *bytes.Buffer) {
	b.WriteString("<" + x.name + ">")
	if len(x.kids) == 0 {
		_ = xml.EscapeText(b, []byte(x.text))
	}
	for _, k := range x.kids {
		k.write(b)
	}
	b.WriteString("</" + x.name + ">")
}
