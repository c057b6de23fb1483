package world_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"time"

	"github.com/rdsvalet/rds-valet/test/harness/world"
)

// A program (such as the demo) starts the world, runs the sidecar binary with the world's
// environment and path names, and tears everything down on Ctrl-C.
func Example_program() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	w, err := world.Start(ctx, world.Options{Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = w.Close(c)
	}()
	cmd := exec.CommandContext(ctx, "bin/sidecar", "--config", "demo.yaml")
	cmd.Env = append(w.Environ(os.Environ()),
		"RDSVALET_AWS_REGION="+w.Region,
		// The listener's path: address w.Address, tls_server_name w.TLSServerName,
		// token_host w.TokenHost, tls.ca_file w.CAFile.
	)
	_ = cmd.Run()
}
