package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/world"
	"github.com/rdsvalet/rds-valet/test/harness/writeloop"
)

// fallbackMovesBack pauses the rig's only live reader past max_replica_lag so that the reader
// listener falls back to the writer, holds a session put there, resumes the reader, and checks
// that the held session ends at idle with the sidecar's farewell, counted as fallback_over,
// and that new sessions go to the reader again.
func (r *clusterRig) fallbackMovesBack(t *testing.T, ctx context.Context, primary, reader *world.Instance) {
	t.Helper()
	if err := reader.PauseReplication(ctx); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	writesDone := make(chan error, 1)
	go func() { writesDone <- keepWriting(ctx, r.e, r.w, 2_000_000, stop) }()
	r.waitTopology(t, "the last reader left out", r.fresh(t, reader.ID, false))
	if got := r.landings(t, 5, true); got[primary.ID] != 5 {
		t.Fatalf("no fresh reader: sessions landed %v, want the fallback %s", got, primary.ID)
	}
	onWriter := r.readerSessionOn(t, ctx, primary.ID)
	defer onWriter.Close()
	before := r.s.metric("rdsvalet_proxy_sessions_closed_total", `listener="ro"`, `reason="fallback_over"`)
	close(stop)
	if err := <-writesDone; err != nil {
		t.Fatal(err)
	}
	if err := reader.ResumeReplication(ctx); err != nil {
		t.Fatal(err)
	}
	r.waitTopology(t, "the reader back", r.fresh(t, reader.ID, true))
	waitFor(t, 20*time.Second, "the fallback session on the writer to end with its farewell", func() error {
		_, _, err := onWriter.WhoAmI(ctx)
		if err == nil {
			return fmt.Errorf("still answers on %s", primary.ID)
		}
		if !strings.Contains(err.Error(), "reader_fallback") {
			t.Fatalf("the fallback session on the writer: %v; want the farewell naming reader_fallback", err)
		}
		return nil
	})
	if after := r.s.metric("rdsvalet_proxy_sessions_closed_total", `listener="ro"`, `reason="fallback_over"`); after != before+1 {
		t.Fatalf("fallback_over closes went %v -> %v, want one more", before, after)
	}
	if got := r.landings(t, 10, false); got[reader.ID] != 10 {
		t.Fatalf("the reader back: sessions landed %v, want all on %s", got, reader.ID)
	}
}

// Discovered instances end to end: the sidecar's config names only the primary (by its
// endpoint name, resolved through dns.server); discovery reads the Aurora stand-in view on it,
// the instance template names the replica, its name resolves through the world's DNS to the
// replica's own stand-in, and the reader listener's sessions run there, on an instance the
// config never listed.
func TestClusterDiscoversUnconfiguredInstance(t *testing.T) {
	for _, e := range clusterEngines {
		t.Run(e.name, func(t *testing.T) {
			o := e.opts(1)
			o.ResolvableInstances = true
			w := startWorldWith(t, o)
			if err := writeloop.Prepare(ctxTimeout(t, 30*time.Second), w.World, e.name); err != nil {
				t.Fatalf("prepare the cluster: %v", err)
			}
			insts := e.instances(w)
			primary, replica := insts[0], insts[1]
			r := &clusterRig{e: e, w: w, ids: map[string]string{}}
			for _, i := range insts {
				r.ids[writeloop.ServerID(i)] = i.ID
			}
			tmpl, cluster := w.InstanceTemplate, "discovery: aurora-postgresql"
			if e.name == "mysql" {
				tmpl, cluster = w.MySQLInstanceTemplate, "discovery: aurora-mysql, topology_schema: "+w.MySQLTopology.Schema()
			}
			// The primary by name only: its endpoint is what the template makes of its id.
			endpoint := strings.Replace(tmpl, "?", primary.ID, 1)
			if endpoint != primary.TokenHost {
				t.Fatalf("template %s gives the primary %s, its token host is %s", tmpl, endpoint, primary.TokenHost)
			}
			listener := func(name, role, addr string) string {
				return fmt.Sprintf(`
  - name: %s
    engine: %s
    listen: "%s"
    role: %s
    connect_timeout: 15s
    auth: {user: app}
    tls: {ca_file: %q}
    health: {interval: 500ms, timeout: 400ms, tls_interval: 500ms, rise: 2, fall: 2}
    cluster: {refresh_interval: 300ms, failover_refresh_interval: 50ms, failover_window: 10s, max_replica_lag: 5s, reader_fallback: none, %s, instance_template: %q}
    paths:
      - {name: %s, address: %q, tls_server_name: %q, token_host: %q}
`, name, e.name, addr, role, w.CAFile, cluster, tmpl, primary.ID, endpoint, primary.TLSServerName, primary.TokenHost)
			}
			r.s = startSidecar(t, fmt.Sprintf(`
log: {level: debug}
admin: {listen: "{{ADMIN}}"}
aws: {region: %s}
dns: {server: %q}
listeners:%s%s`, w.Region, w.DNS.Addr, listener("rw", "writer", "{{PG}}"), listener("ro", "reader", "{{MYSQL}}")), w.SidecarEnv)
			r.waitTopology(t, "the replica discovered, checked and fresh", func(ls map[string]topologyListener) error {
				for _, l := range ls {
					if l.Writer != primary.ID {
						return fmt.Errorf("%s: writer %q, want %s", l.Listener, l.Writer, primary.ID)
					}
					found := false
					for _, in := range l.Instances {
						if in.Name != replica.ID {
							continue
						}
						found = true
						switch {
						case !in.Discovered:
							t.Fatalf("%s: %s not marked discovered, but the config does not list it", l.Listener, in.Name)
						case in.Role != "reader" || in.LastError != "":
							return fmt.Errorf("%s: %s role %s (%s)", l.Listener, in.Name, in.Role, in.LastError)
						case l.Listener == "ro" && !in.Fresh:
							return fmt.Errorf("%s: %s not fresh yet (lag %v)", l.Listener, in.Name, in.LagSeconds)
						}
					}
					if !found {
						return fmt.Errorf("%s: %s not discovered yet", l.Listener, replica.ID)
					}
				}
				return nil
			})
			if got := r.landings(t, 10, false); got[replica.ID] != 10 {
				t.Fatalf("reader sessions landed %v, want all 10 on the discovered %s (server %s)", got, replica.ID, writeloop.ServerID(replica))
			}
			// The writer listener still goes to the configured primary.
			ctx := ctxTimeout(t, 30*time.Second)
			s, err := e.connect(ctx, r.s.pgAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if srv, writer, err := s.WhoAmI(ctx); err != nil || !writer || r.ids[srv] != primary.ID {
				t.Fatalf("writer session on %s (writer %v, %v), want %s", r.ids[srv], writer, err, primary.ID)
			}
		})
	}
}

// mysqlClusterSidecar starts a sidecar over a MySQL rig's instances with one writer listener
// ({{PG}}) and one reader ({{MYSQL}}), their cluster block and extra keys as given.
func (r *clusterRig) mysqlClusterSidecar(t *testing.T, top, cluster, extra string) *sidecar {
	t.Helper()
	listener := func(name, role, addr string) string {
		return fmt.Sprintf(`
  - name: %s
    engine: mysql
    listen: "%s"
    role: %s
    auth: {user: app}
    tls: {ca_file: %q}
    health: {interval: 500ms, timeout: 400ms, tls_interval: 500ms, rise: 2, fall: 2}
    cluster: {%s}%s
    paths:
%s`, name, addr, role, r.w.CAFile, cluster, extra, r.paths)
	}
	s := startSidecar(t, fmt.Sprintf(`
log: {level: debug}
admin: {listen: "{{ADMIN}}"%s}
aws: {region: %s}
listeners:%s%s`, top, r.w.Region, listener("rw", "writer", "{{PG}}"), listener("ro", "reader", "{{MYSQL}}")), r.w.SidecarEnv)
	r.s = s
	r.waitTopology(t, "every instance checked", everyInstanceChecked)
	return s
}

// A pooled session is checked for its role at checkout, as a fresh login is: the MySQL writer
// is demoted with read_only (and the replica promoted) while the monitor, checking once an
// hour, has not looked; the app's next connect finds the pooled session on the demoted
// instance, discards it (reason role) and gets the new writer. Then readiness: with the
// healthy-path policy, the writer killed and nothing promoted, /readyz turns 503 naming the
// writer listener once connect_timeout has passed; a writer back, 200 again.
func TestClusterPooledCheckoutAndReadiness(t *testing.T) {
	e := clusterEngines[1]
	w := startWorldWith(t, e.opts(1))
	if err := writeloop.Prepare(ctxTimeout(t, 30*time.Second), w.World, e.name); err != nil {
		t.Fatalf("prepare the cluster: %v", err)
	}
	insts := e.instances(w)
	primary, replica := insts[0], insts[1]
	r := &clusterRig{e: e, w: w, ids: map[string]string{}}
	var paths strings.Builder
	for _, i := range insts {
		fmt.Fprintf(&paths, "      - {name: %s, address: %q, tls_server_name: %q, token_host: %q}\n", i.ID, i.Address, i.TLSServerName, i.TokenHost)
		r.ids[writeloop.ServerID(i)] = i.ID
	}
	r.paths = paths.String()
	ctx := ctxTimeout(t, 3*time.Minute)

	// failover_window 1ms: no fast pace after the first writer is found; refresh once an hour.
	s := r.mysqlClusterSidecar(t, "", "refresh_interval: 1h, failover_refresh_interval: 50ms, failover_window: 1ms",
		"\n    connect_timeout: 15s\n    pool: {max_idle: 2, check_after: 1ms}")
	app, err := e.connect(ctx, s.pgAddr)
	if err != nil {
		t.Fatal(err)
	}
	if srv, writer, err := app.WhoAmI(ctx); err != nil || !writer || r.ids[srv] != primary.ID {
		t.Fatalf("first writer session on %s (writer %v, %v), want %s", r.ids[srv], writer, err, primary.ID)
	}
	app.Close()
	waitFor(t, 10*time.Second, "the session pooled", func() error {
		if n := s.metric("rdsvalet_reuse_idle_sessions", `listener="rw"`); n != 1 {
			return fmt.Errorf("%v pooled", n)
		}
		return nil
	})
	if err := primary.MariaDB.SetReadOnly(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := replica.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if w := r.topology(t)["rw"].Writer; w != primary.ID {
		t.Fatalf("the monitor already moved to %q: the test would show the eviction, not the checkout's check", w)
	}
	app, err = e.connect(ctx, s.pgAddr)
	if err != nil {
		t.Fatalf("connect after the demotion: %v", err)
	}
	srv, writer, err := app.WhoAmI(ctx)
	app.Close()
	if err != nil || !writer || r.ids[srv] != replica.ID {
		t.Fatalf("writer session after the demotion on %s (writer %v, %v), want the new writer %s", r.ids[srv], writer, err, replica.ID)
	}
	if n := s.metric("rdsvalet_reuse_discards_total", `listener="rw"`, `reason="role"`); n != 1 {
		t.Fatalf("role discards %v, want 1 (the pooled session on the demoted writer)", n)
	}
	if n := s.metric("rdsvalet_reuse_checkouts_total", `listener="rw"`, `result="hit"`); n != 0 {
		t.Fatalf("%v pooled sessions handed out, want none (the only one was on the demoted writer)", n)
	}

	s.signal(syscall.SIGTERM)
	s.wait(20 * time.Second)
	s = r.mysqlClusterSidecar(t, ", readiness: healthy-path", "refresh_interval: 300ms, failover_refresh_interval: 50ms, failover_window: 1s",
		"\n    connect_timeout: 3s")
	if code, body, err := s.get("/readyz"); err != nil || code != 200 {
		t.Fatalf("/readyz %d %q (%v) with a writer", code, body, err)
	}
	replica.Kill()
	r.waitTopology(t, "the writer lost", func(ls map[string]topologyListener) error {
		if w := ls["rw"].Writer; w != "" {
			return fmt.Errorf("writer %q", w)
		}
		return nil
	})
	// A failover under way (connections wait up to connect_timeout, 3 s): still ready.
	if code, body, err := s.get("/readyz"); err != nil || code != 200 {
		t.Fatalf("/readyz %d %q (%v) right after the writer was lost, want 200 while a failover may still end", code, body, err)
	}
	waitFor(t, 20*time.Second, "/readyz 503 naming the writer listener", func() error {
		code, body, err := s.get("/readyz")
		if err != nil {
			return err
		}
		if code != 503 {
			return fmt.Errorf("/readyz %d %q", code, body)
		}
		if !strings.Contains(body, "listener rw has had no writer") {
			t.Fatalf("/readyz 503 %q, want it to name the writer listener", body)
		}
		return nil
	})
	if err := primary.MariaDB.SetReadOnly(ctx, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "/readyz 200 with a writer again", func() error {
		if code, body, err := s.get("/readyz"); err != nil || code != 200 {
			return fmt.Errorf("/readyz %d %q (%v)", code, body, err)
		}
		return nil
	})
}
