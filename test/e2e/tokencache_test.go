package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// TestTokenCacheBounded: 5,000 IAM logins, each as a different user, through the built sidecar
// leave the token cache at its default bound (1,024) and the heap bounded. Every one of them
// gets a token: the stand-in verifies it and only the database refuses the unknown role. Heap
// figures are HeapAlloc right after a forced GC (pprof's heap?gc=1), so garbage does not count.
// Measured (2026-12): +2.0 MiB with the bound, +6.9 MiB when the cache kept every user.
func TestTokenCacheBounded(t *testing.T) {
	const (
		logins      = 5000
		concurrency = 24
		bound       = 1024 // auth.DefaultTokenCacheEntries, the aws.token_cache_max_entries default
		// The bound's worth of tokens (about 1.4 MiB) and slack for the runtime; 5,000 kept
		// are far above it.
		maxGrowth = 4 << 20
	)
	// The role may rds-db:connect as any db user, so that every login gets past IAM to the
	// database, which refuses the unknown roles.
	w := startWorldWith(t, world.Options{DBUsersAllowed: []string{"*"}})
	pprofAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := replaceOnce(t, iamConfig(w, ""), "log: {level: debug}", "log: {level: info}")
	s := startSidecar(t, cfg, append(append([]string{}, w.SidecarEnv...), "RDSVALET_PPROF_LISTEN="+pprofAddr))

	host, port, _ := net.SplitHostPort(s.pgAddr)
	login := func(ctx context.Context, user string) error {
		c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=%s dbname=app sslmode=disable", host, port, user))
		if err != nil {
			return err
		}
		defer c.Close(ctx)
		_, err = c.Exec(ctx, "SELECT 1")
		return err
	}
	// Warm up the credential chain, the TLS config and the pools before the baseline.
	if err := login(ctxTimeout(t, 15*time.Second), "app"); err != nil {
		t.Fatal(err)
	}
	heap0 := heapAfterGC(t, pprofAddr)
	mints0 := s.metric("rdsvalet_auth_token_mints_total", `result="ok"`)
	verified0 := w.StandinLoginsOK()

	ctx := ctxTimeout(t, 5*time.Minute)
	var next, refused atomic.Int64
	var wg sync.WaitGroup
	var firstErr sync.Once
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > logins || ctx.Err() != nil {
					return
				}
				// Long names (63 bytes, PostgreSQL's limit, which the sidecar enforces) make each
				// cached token and key bigger, so that tokens kept for every user stand well
				// clear of the heap's noise.
				user := fmt.Sprintf("nobody_%05d_%s", i, strings.Repeat("x", 50))
				lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := login(lctx, user)
				cancel()
				var pgErr *pgconn.PgError
				// 28000: the role does not exist. Anything else (a token refused, a timeout)
				// means the login did not go as far as the database.
				if errors.As(err, &pgErr) && pgErr.Code == "28000" {
					refused.Add(1)
					continue
				}
				firstErr.Do(func() { t.Errorf("login as %s: %v, want the database's 28000", user, err) })
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if n := refused.Load(); n != logins {
		t.Fatalf("%d of %d logins reached the database", n, logins)
	}
	if got := s.metric("rdsvalet_auth_token_mints_total", `result="ok"`) - mints0; got < logins {
		t.Errorf("%v tokens minted for %d users", got, logins)
	}
	// The stand-in counts a login once the token is verified and the session handed to the
	// database, which then refuses the role.
	if got := w.StandinLoginsOK() - verified0; got < logins {
		t.Errorf("the stand-in verified the token of %d logins, want %d", got, logins)
	}

	gauge := s.metric("rdsvalet_auth_token_cache_entries")
	heap1 := heapAfterGC(t, pprofAddr)
	t.Logf("after %d users: token cache entries %v, size evictions %v, heap after GC %.1f MiB -> %.1f MiB (%+.1f MiB)",
		logins, gauge, s.metric("rdsvalet_auth_token_cache_evictions_total", `reason="size"`),
		float64(heap0)/(1<<20), float64(heap1)/(1<<20), float64(heap1-heap0)/(1<<20))
	if gauge < 1 || gauge > bound {
		t.Errorf("rdsvalet_auth_token_cache_entries = %v, want between 1 and the bound %d", gauge, bound)
	}
	if heap1-heap0 > maxGrowth {
		t.Errorf("heap grew by %.1f MiB over %d distinct users, want at most %.1f MiB", float64(heap1-heap0)/(1<<20), logins, float64(maxGrowth)/(1<<20))
	}
	// The cache still serves: a real user logs in after the storm.
	if err := login(ctxTimeout(t, 15*time.Second), "app"); err != nil {
		t.Fatalf("login after the storm: %v", err)
	}
}

// heapAfterGC is the sidecar's HeapAlloc right after a garbage collection, read from pprof's
// heap profile (gc=1 collects first; debug=1 appends runtime.MemStats as text).
func heapAfterGC(t *testing.T, pprofAddr string) int64 {
	t.Helper()
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + pprofAddr + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "# HeapAlloc = "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no HeapAlloc in the heap profile (%d bytes)", len(b))
	return 0
}
