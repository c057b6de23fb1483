// Package faultnet runs Shopify toxiproxy in-process: named TCP paths in front of an upstream,
// each one cut, slowed or reset on demand through toxiproxy's own HTTP API, so that tests and
// the demo can break one network path to the database and watch the sidecar route around it.
package faultnet

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	toxiclient "github.com/Shopify/toxiproxy/v2/client"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Net is a running toxiproxy.
type Net struct {
	APIAddr string
	Client  *toxiclient.Client

	api  *toxiproxy.ApiServer
	done chan error
	once sync.Once
}

// Start runs toxiproxy's API on apiAddr ("127.0.0.1:0" picks a free port) and waits until it
// answers.
func Start(apiAddr string) (*Net, error) {
	if host, port, err := net.SplitHostPort(apiAddr); err == nil && port == "0" {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		apiAddr = l.Addr().String()
		_ = l.Close()
	}
	api := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	n := &Net{APIAddr: apiAddr, Client: toxiclient.NewClient("http://" + apiAddr), api: api, done: make(chan error, 1)}
	go func() { n.done <- api.Listen(apiAddr) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := n.Client.Version(); err == nil {
			return n, nil
		}
		select {
		case err := <-n.done:
			return nil, fmt.Errorf("toxiproxy API on %s: %w", apiAddr, err)
		default:
		}
		if time.Now().After(deadline) {
			_ = api.Shutdown()
			return nil, errors.New("toxiproxy API did not come up")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// AddPath creates a proxy named name in front of upstream, listening on listen ("" for a free
// loopback port), and returns the address it listens on.
func (n *Net) AddPath(name, listen, upstream string) (string, error) {
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	p, err := n.Client.CreateProxy(name, listen, upstream)
	if err != nil {
		return "", fmt.Errorf("create toxiproxy path %s: %w", name, err)
	}
	return p.Listen, nil
}

// Cut disables the path: its listener closes and its connections are dropped.
func (n *Net) Cut(name string) error {
	p, err := n.Client.Proxy(name)
	if err != nil {
		return err
	}
	return p.Disable()
}

// Restore enables the path again and removes its toxics.
func (n *Net) Restore(name string) error {
	p, err := n.Client.Proxy(name)
	if err != nil {
		return err
	}
	toxics, err := p.Toxics()
	if err != nil {
		return err
	}
	for _, t := range toxics {
		if err := p.RemoveToxic(t.Name); err != nil {
			return err
		}
	}
	if !p.Enabled {
		return p.Enable()
	}
	return nil
}

// Toxic adds a toxic of type typ ("reset_peer", "timeout", "latency", "slicer", ...) to both
// directions of the path.
func (n *Net) Toxic(name, typ string, attrs toxiclient.Attributes) error {
	p, err := n.Client.Proxy(name)
	if err != nil {
		return err
	}
	for _, stream := range []string{"downstream", "upstream"} {
		if _, err := p.AddToxic(typ+"_"+stream, typ, stream, 1, attrs); err != nil {
			return fmt.Errorf("add %s toxic to %s: %w", typ, name, err)
		}
	}
	return nil
}

// Close stops toxiproxy and every path.
func (n *Net) Close() {
	n.once.Do(func() {
		_ = n.api.Collection.Clear()
		_ = n.api.Shutdown()
		<-n.done
	})
}
