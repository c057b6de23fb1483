package provision_test

import (
	"context"
	"encoding/binary"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/rdsvalet/rds-valet/internal/provision"
)

// dnsServer answers A queries from a table over real UDP on loopback, so the "dns" proxy-IP
// source is tested through Go's real resolver and the DNS wire format.
type dnsServer struct {
	pc   net.PacketConn
	mu   sync.Mutex
	a    map[string][]net.IP
	wg   sync.WaitGroup
	seen []string
}

func startDNS(t *testing.T) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &dnsServer{pc: pc, a: map[string][]net.IP{}}
	d.wg.Add(1)
	go d.serve()
	t.Cleanup(func() { _ = pc.Close(); d.wg.Wait() })
	return d
}

func (d *dnsServer) set(name string, ips ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.a[strings.ToLower(name)+"."] = nil
	for _, ip := range ips {
		d.a[strings.ToLower(name)+"."] = append(d.a[strings.ToLower(name)+"."], net.ParseIP(ip).To4())
	}
}

func (d *dnsServer) serve() {
	defer d.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, addr, err := d.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := buf[:n]
		if len(q) < 12 {
			continue
		}
		// Question name: labels up to the zero byte, then type and class.
		i, labels := 12, []string{}
		for i < len(q) && q[i] != 0 {
			l := int(q[i])
			labels = append(labels, string(q[i+1:i+1+l]))
			i += 1 + l
		}
		qend := i + 5
		if qend > len(q) {
			continue
		}
		name := strings.ToLower(strings.Join(labels, ".")) + "."
		qtype := binary.BigEndian.Uint16(q[i+1:])
		d.mu.Lock()
		ips := d.a[name]
		d.seen = append(d.seen, name)
		d.mu.Unlock()
		if qtype != 1 { // only A records exist here
			ips = nil
		}
		resp := append([]byte{}, q[:2]...)
		resp = append(resp, 0x81, 0x80, 0, 1)
		resp = binary.BigEndian.AppendUint16(resp, uint16(len(ips)))
		resp = append(resp, 0, 0, 0, 0)
		resp = append(resp, q[12:qend]...)
		for _, ip := range ips {
			resp = append(resp, 0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4)
			resp = append(resp, ip...)
		}
		_, _ = d.pc.WriteTo(resp, addr)
	}
}

func (d *dnsServer) resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "udp", d.pc.LocalAddr().String())
	}}
}

func TestProxyIPsFromDNS(t *testing.T) {
	fake := startFake(t, 1)
	dns := startDNS(t)
	spec := exampleSpec(t)
	p := newProvisioner(t, fake, spec)
	ctx := context.Background()
	if _, _, err := p.Apply(ctx); err != nil { // eni source first: creates everything
		t.Fatal(err)
	}
	px, _ := fake.Proxy("orders")
	dns.set(px.Endpoint, "10.0.7.1", "10.0.8.2")

	pd, err := provision.New(provision.Config{Spec: spec, ProxyIPSource: "dns"}, provision.Deps{Clients: clientsOf(t, fake), Resolver: dns.resolver(), Clock: &stepClock{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pd.SyncTargets(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fake.TargetIPs("rdsvalet-orders"); strings.Join(got, ",") != "10.0.7.1,10.0.8.2" {
		t.Errorf("targets %v", got)
	}
	// A name that does not resolve stops the run instead of emptying the target group.
	dns.set(px.Endpoint)
	if _, err := pd.SyncTargets(ctx); err == nil {
		t.Error("sync-targets with no DNS answer succeeded")
	}
	if got := fake.TargetIPs("rdsvalet-orders"); len(got) != 2 {
		t.Errorf("targets changed on a failed lookup: %v", got)
	}
}
