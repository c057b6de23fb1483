// Package testdns is an authoritative DNS server on loopback whose A records a test changes
// while the sidecar runs, to check that upstream names are resolved on every dial.
package testdns

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Server answers A queries from a table; every other query gets an empty NOERROR answer.
type Server struct {
	Addr string // host:port, UDP and TCP

	udp, tcp *dns.Server
	mu       sync.Mutex
	records  map[string][]net.IP // by lower-case FQDN
	ttls     map[string]uint32   // seconds, by lower-case FQDN; absent: 0
	queries  int
}

// Start listens on a random loopback port (UDP and TCP on the same port).
func Start() (*Server, error) {
	var pc net.PacketConn
	var ln net.Listener
	var err error
	// The free UDP port may be taken for TCP; a few tries find one free for both.
	for range 20 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			return nil, err
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: pc.LocalAddr().String(), records: map[string][]net.IP{}, ttls: map[string]uint32{}}
	h := dns.HandlerFunc(s.serve)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: ln, Handler: h}
	started := make(chan struct{}, 2)
	s.udp.NotifyStartedFunc = func() { started <- struct{}{} }
	s.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go func() { _ = s.udp.ActivateAndServe() }()
	go func() { _ = s.tcp.ActivateAndServe() }()
	<-started
	<-started
	return s, nil
}

// Set makes name resolve to ips, in that order, with a TTL of 0 (no client may cache it).
func (s *Server) Set(name string, ips ...string) { s.SetTTL(name, 0, ips...) }

// SetTTL makes name resolve to ips with the given TTL, as a cluster endpoint's record (RDS
// gives them 5 s) that a caching resolver keeps until it expires.
func (s *Server) SetTTL(name string, ttl time.Duration, ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ttls[dns.Fqdn(strings.ToLower(name))] = uint32(ttl / time.Second)
	var list []net.IP
	for _, ip := range ips {
		list = append(list, net.ParseIP(ip))
	}
	s.records[dns.Fqdn(strings.ToLower(name))] = list
}

// Queries is how many queries were answered.
func (s *Server) Queries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries
}

// Close stops both listeners.
func (s *Server) Close() {
	_ = s.udp.Shutdown()
	_ = s.tcp.Shutdown()
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	resp.Authoritative = true
	s.mu.Lock()
	s.queries++
	for _, q := range req.Question {
		if q.Qtype != dns.TypeA {
			continue
		}
		ips, ok := s.records[strings.ToLower(q.Name)]
		ttl := s.ttls[strings.ToLower(q.Name)]
		if !ok {
			resp.Rcode = dns.RcodeNameError
			continue
		}
		for _, ip := range ips {
			resp.Answer = append(resp.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
				A:   ip,
			})
		}
	}
	s.mu.Unlock()
	_ = w.WriteMsg(resp)
}

// Cache is the client side: a resolver that asks one server and keeps each answer for its
// TTL, as a DNS-following driver's resolver (or the JVM's, or nscd) does. A client using it
// sees a changed record only once the cached one has expired.
type Cache struct {
	server string
	mu     sync.Mutex
	byName map[string]cached
}

type cached struct {
	ip      string
	expires time.Time
}

// NewCache returns a cache in front of the DNS server at addr (host:port).
func NewCache(addr string) *Cache { return &Cache{server: addr, byName: map[string]cached{}} }

// Lookup returns the first A record of name: from the cache while its TTL runs, else asked.
func (c *Cache) Lookup(ctx context.Context, name string) (string, error) {
	fqdn := dns.Fqdn(strings.ToLower(name))
	c.mu.Lock()
	e, ok := c.byName[fqdn]
	c.mu.Unlock()
	if ok && time.Now().Before(e.expires) {
		return e.ip, nil
	}
	m := new(dns.Msg)
	m.SetQuestion(fqdn, dns.TypeA)
	cl := &dns.Client{Timeout: 2 * time.Second}
	resp, _, err := cl.ExchangeContext(ctx, m, c.server)
	if err != nil {
		return "", fmt.Errorf("testdns: look up %s: %w", name, err)
	}
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			e := cached{ip: a.A.String(), expires: time.Now().Add(time.Duration(a.Hdr.Ttl) * time.Second)}
			c.mu.Lock()
			c.byName[fqdn] = e
			c.mu.Unlock()
			return e.ip, nil
		}
	}
	return "", fmt.Errorf("testdns: %s has no A record (rcode %s)", name, dns.RcodeToString[resp.Rcode])
}
