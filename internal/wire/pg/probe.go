package pg

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/rdsvalet/rds-valet/internal/health"
)

var _ health.Prober = (*Protocol)(nil)

// ProbeTLS implements health.Prober: SSLRequest and a verified TLS handshake.
func (p *Protocol) ProbeTLS(ctx context.Context, path health.Path) error {
	tc, err := dialTLS(ctx, p.cfg.Dialer, path.Address, p.cfg.TLS.For(path.TLSServerName))
	if err != nil {
		return err
	}
	return tc.Close()
}

// ProbeLogin implements health.Prober: a full login as the probe user and SELECT 1.
func (p *Protocol) ProbeLogin(ctx context.Context, path health.Path) error {
	user := p.cfg.ProbeUser
	if user == "" {
		user = p.cfg.ForceUser
	}
	if user == "" {
		return errors.New("no probe user configured")
	}
	db := p.cfg.ProbeDatabase
	if db == "" {
		db = user
	}
	tc, err := dialTLS(ctx, p.cfg.Dialer, path.Address, p.cfg.TLS.For(path.TLSServerName))
	if err != nil {
		return err
	}
	defer tc.Close()
	params := map[string]string{"user": user, "database": db, "application_name": "rds-valet-probe"}
	up, err := login(ctx, tc, params, func(ctx context.Context) (string, error) { return p.cfg.ProbeSecret(ctx, path, user) }, p.salted)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = tc.SetDeadline(dl)
	}
	q, _ := (&pgproto3.Query{String: "SELECT 1"}).Encode(nil)
	if _, err := tc.Write(q); err != nil {
		return fmt.Errorf("probe query: %w", err)
	}
	for {
		typ, body, err := readMessage(up.br, maxUpstreamLoginMsgLength)
		if err != nil {
			return fmt.Errorf("probe query: %w", err)
		}
		switch typ {
		case 'E':
			ue := &upstreamError{}
			_ = ue.resp.Decode(body)
			return fmt.Errorf("probe query: %w", ue)
		case 'Z':
			x, _ := (&pgproto3.Terminate{}).Encode(nil)
			_, _ = tc.Write(x)
			return nil
		}
	}
}
