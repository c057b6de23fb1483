package faultnet

import (
	"io"
	"net"
	"testing"
	"time"

	toxiclient "github.com/Shopify/toxiproxy/v2/client"
)

func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	_, err = io.ReadFull(c, buf)
	return err
}

func TestCutRestoreToxic(t *testing.T) {
	n, err := Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	addr, err := n.AddPath("path1", "", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(addr); err != nil {
		t.Fatalf("healthy path: %v", err)
	}
	if err := n.Cut("path1"); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(addr); err == nil {
		t.Fatal("cut path still answers")
	}
	if err := n.Restore("path1"); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(addr); err != nil {
		t.Fatalf("restored path: %v", err)
	}
	if err := n.Toxic("path1", "reset_peer", toxiclient.Attributes{"timeout": 0}); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(addr); err == nil {
		t.Fatal("reset_peer path still answers")
	}
	if err := n.Restore("path1"); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(addr); err != nil {
		t.Fatalf("restored after toxic: %v", err)
	}
}
