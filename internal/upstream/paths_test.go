package upstream

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/auth"
	"github.com/rdsvalet/rds-valet/internal/health"
	"github.com/rdsvalet/rds-valet/internal/proxy"
)

// loginFunc is an engine whose login is a function.
type loginFunc func(ctx context.Context, p health.Path, st *proxy.Startup, secret func(context.Context) (string, error)) (*proxy.Session, error)

func (f loginFunc) Login(ctx context.Context, p health.Path, st *proxy.Startup, secret func(context.Context) (string, error)) (*proxy.Session, error) {
	return f(ctx, p, st, secret)
}

func failWith(err error) loginFunc {
	return func(context.Context, health.Path, *proxy.Startup, func(context.Context) (string, error)) (*proxy.Session, error) {
		return nil, err
	}
}

func source(set *health.Set, l Login) *Paths {
	return New(Config{Listener: "pg", Paths: set, Engine: l, ConnectTimeout: time.Second,
		Secret: func(_ context.Context, p health.Path, user string) (string, error) {
			return p.TokenHost + "/" + user, nil
		}})
}

// A login that fails for want of an IAM token (STS down, token file gone) must not count
// against the path: with fall 1, one such failure would otherwise mark it down and evict every
// idle session on it. A network failure still counts.
func TestOpenDoesNotBlameThePathForTokenErrors(t *testing.T) {
	set := health.NewSet("pg", []health.Path{{Name: "only", Address: "127.0.0.1:1"}}, health.Thresholds{Rise: 1, Fall: 1}, nil)
	tokenErr := &auth.TokenError{Key: auth.Key{Endpoint: "db:5432", Region: "us-east-1", User: "app"}, Err: errors.New("get AWS credentials: STS unavailable")}
	for range 3 {
		_, err := source(set, failWith(tokenErr)).Open(context.Background(), &proxy.Startup{User: "app"})
		var ne *proxy.NoPathError
		if !errors.As(err, &ne) || !ne.All(auth.IsTokenError) {
			t.Fatalf("want a NoPathError of token errors, got %v", err)
		}
	}
	if !set.AnyUp() {
		t.Fatal("token errors marked the path down")
	}
	_, _ = source(set, failWith(errors.New("dial: connection refused"))).Open(context.Background(), &proxy.Startup{User: "app"})
	if set.AnyUp() {
		t.Fatal("a network failure did not count against the path")
	}
}

// Open walks the paths best first, hands each login the startup and the secret for that
// path and user, stops at the first success, and names the path a final answer came from.
func TestOpenTriesPathsInOrder(t *testing.T) {
	paths := []health.Path{{Name: "a", TokenHost: "a:5432"}, {Name: "b", TokenHost: "b:5432"}, {Name: "c", TokenHost: "c:5432"}}
	set := health.NewSet("pg", paths, health.Thresholds{Rise: 1, Fall: 1}, nil)
	var tried, secrets []string
	st := &proxy.Startup{User: "app", Database: "db"}
	login := loginFunc(func(ctx context.Context, p health.Path, got *proxy.Startup, secret func(context.Context) (string, error)) (*proxy.Session, error) {
		if got != st {
			t.Errorf("login got startup %+v, want the one Open was given", got)
		}
		tried = append(tried, p.Name)
		s, _ := secret(ctx)
		secrets = append(secrets, s)
		switch p.Name {
		case "a":
			return nil, errors.New("dial a: connection refused")
		case "b":
			return nil, &proxy.IncompatibleError{Err: errors.New("b lacks a capability")}
		}
		return &proxy.Session{Path: p.Name}, nil
	})
	sess, err := source(set, login).Open(context.Background(), st)
	if err != nil || sess.Path != "c" {
		t.Fatalf("Open = %+v, %v; want a session on c", sess, err)
	}
	if want := "a b c"; strings.Join(tried, " ") != want || strings.Join(secrets, " ") != "a:5432/app b:5432/app c:5432/app" {
		t.Fatalf("tried %v with secrets %v, want %s", tried, secrets, want)
	}
	snap := map[string]string{}
	for _, ps := range set.Snapshot() {
		snap[ps.Name] = ps.State
	}
	if snap["a"] != "down" || snap["b"] != "up" || snap["c"] != "up" {
		t.Fatalf("path states %v: want a down (network), b up (it answered), c up", snap)
	}

	final := &proxy.AnsweredError{Err: errors.New("database \"nope\" does not exist")}
	tried = nil
	_, err = source(set, failWith(final)).Open(context.Background(), st)
	if got := proxy.AnsweredOn(err); got != "b" || !errors.As(err, &final) {
		t.Fatalf("a final answer: AnsweredOn = %q (err %v), want b, the best path left", got, err)
	}
}

// answerErr is an engine's refusal: the database's own answer (health.Answer).
type answerErr struct{ code string }

func (e *answerErr) Error() string     { return "upstream refused the login: FATAL " + e.code }
func (e *answerErr) DatabaseAnswered() {}

// A database's answer proves the path works: it never counts against it, is not retried on
// another path unless it is one another path could change (Retry), and reaches the app as the
// database's own. With fall 1, one answer counted as a failure would mark the path down.
func TestOpenNeverBlamesThePathForTheDatabasesAnswer(t *testing.T) {
	paths := []health.Path{{Name: "a"}, {Name: "b"}}
	set := health.NewSet("pg", paths, health.Thresholds{Rise: 1, Fall: 1}, nil)
	var tried []string
	answers := map[string]error{
		"a": &proxy.AnsweredError{Err: &answerErr{"53300"}},
	}
	login := loginFunc(func(_ context.Context, p health.Path, _ *proxy.Startup, _ func(context.Context) (string, error)) (*proxy.Session, error) {
		tried = append(tried, p.Name)
		return nil, answers[p.Name]
	})
	obs := &observer{}
	src := source(set, login)
	src.cfg.Observer = obs
	for range 5 {
		_, err := src.Open(context.Background(), &proxy.Startup{User: "app"})
		var ue *answerErr
		if !errors.As(err, &ue) || ue.code != "53300" || proxy.AnsweredOn(err) != "a" {
			t.Fatalf("Open = %v; want the database's own 53300, answered on a", err)
		}
	}
	if got := strings.Join(tried, " "); got != "a a a a a" {
		t.Fatalf("tried %q: a full database is not retried on another path", got)
	}
	if !allUp(set) || obs.results["a answered"] != 5 {
		t.Fatalf("paths %v, observed %v: want every path up and 5 answered logins", set.Snapshot(), obs.results)
	}

	// A server going away (57P03) is an answer another path may change: Open moves on, the
	// path is still not blamed, and when every path says so the app gets the answer.
	tried = nil
	answers["a"] = &proxy.AnsweredError{Err: &answerErr{"57P03"}, Retry: "the server is starting up"}
	answers["b"] = &proxy.AnsweredError{Err: &answerErr{"57P03"}, Retry: "the server is starting up"}
	_, err := src.Open(context.Background(), &proxy.Startup{User: "app"})
	var ue *answerErr
	if !errors.As(err, &ue) || ue.code != "57P03" || strings.Join(tried, " ") != "a b" || !allUp(set) {
		t.Fatalf("Open = %v after trying %v, paths %v; want 57P03 from b after a and b, all up", err, tried, set.Snapshot())
	}
}

type observer struct{ results map[string]int }

func (o *observer) ObserveLogin(_, path, result string, _ float64) {
	if o.results == nil {
		o.results = map[string]int{}
	}
	o.results[path+" "+result]++
}

func allUp(set *health.Set) bool {
	for _, ps := range set.Snapshot() {
		if ps.State != "up" {
			return false
		}
	}
	return true
}

// A server that hangs up after TLS reached the path: Open moves on without blaming it, and
// when no path serves, the app is told it could not connect (no database answer to pass on).
func TestOpenMovesOnFromAHangUp(t *testing.T) {
	set := health.NewSet("pg", []health.Path{{Name: "a"}, {Name: "b"}}, health.Thresholds{Rise: 1, Fall: 1}, nil)
	var tried []string
	hup := &proxy.HungUpError{Err: errors.New("read login response: EOF")}
	_, err := source(set, loginFunc(func(_ context.Context, p health.Path, _ *proxy.Startup, _ func(context.Context) (string, error)) (*proxy.Session, error) {
		tried = append(tried, p.Name)
		return nil, hup
	})).Open(context.Background(), &proxy.Startup{User: "app"})
	var ne *proxy.NoPathError
	if !errors.As(err, &ne) || strings.Join(tried, " ") != "a b" || !allUp(set) {
		t.Fatalf("Open = %v after %v, paths %v; want a NoPathError after a and b, both up", err, tried, set.Snapshot())
	}
}

// A path with its own Region (a cross-region replica) gets a token signed there; the others
// the listener's. The cache keys by Region too, so the same host and user in two Regions are
// two tokens.
func TestIAMSecretSignsForThePathsRegion(t *testing.T) {
	var minted []auth.Key
	tokens := auth.NewTokenCache(auth.TokenCacheConfig{Minter: func(_ context.Context, k auth.Key, _ aws.Credentials) (string, error) {
		minted = append(minted, k)
		return k.Endpoint + "@" + k.Region, nil
	}}, credentials.StaticCredentialsProvider{Value: aws.Credentials{AccessKeyID: "AKID", SecretAccessKey: "s"}}, zap.NewNop(), nil)
	secret := IAMSecret(tokens, "us-east-1")
	ctx := context.Background()
	home := health.Path{Name: "instance", TokenHost: "db:5432"}
	west := health.Path{Name: "replica-west", TokenHost: "db:5432", Region: "us-west-2"}
	a, err1 := secret(ctx, home, "app")
	b, err2 := secret(ctx, west, "app")
	if err1 != nil || err2 != nil || a != "db:5432@us-east-1" || b != "db:5432@us-west-2" || len(minted) != 2 {
		t.Fatalf("tokens %q %q (%v %v), minted %+v", a, b, err1, err2, minted)
	}
}
