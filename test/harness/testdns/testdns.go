// Package testdns is an authoritative DNS server on loopback whose A records a test changes
// while the sidecar runs, to check that upstream names are resolved on every dial.
package testdns

import (
	"net"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// Server answers A queries from a table; every other query gets an empty NOERROR answer.
type Server struct {
	Addr string // host:port, UDP and TCP

	udp, tcp *dns.Server
	mu       sync.Mutex
	records  map[string][]net.IP // by lower-case FQDN
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
	s := &Server{Addr: pc.LocalAddr().String(), records: map[string][]net.IP{}}
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

// Set makes name resolve to ips, in that order.
func (s *Server) Set(name string, ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
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
		if !ok {
			resp.Rcode = dns.RcodeNameError
			continue
		}
		for _, ip := range ips {
			resp.Answer = append(resp.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
				A:   ip,
			})
		}
	}
	s.mu.Unlock()
	_ = w.WriteMsg(resp)
}
