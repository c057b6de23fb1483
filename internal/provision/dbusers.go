package provision

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"go.uber.org/zap"

	"github.com/rdsvalet/rds-valet/internal/dbusers"
)

const kindDBUser = "db-user"

// DBUsersConfig is how plan and apply reach the database to create the db users, as the master
// user. A nil Config.DBUsers leaves the db users alone (neither checked nor created).
type DBUsersConfig struct {
	// Endpoint is the host:port dialled instead of the instance endpoint (a port-forward, a
	// job in the VPC). TLS is still verified for the instance endpoint's name.
	Endpoint string
	// RootCAs verify the instance's certificate (the RDS CA bundle); nil = the system pool.
	RootCAs *x509.CertPool
	// RevokeRemoved drops the db users this provisioner created that the spec no longer names;
	// without it they are only reported.
	RevokeRemoved bool
	// ConnectTimeout bounds dial, TLS and login; 0 = 15s.
	ConnectTimeout time.Duration
}

// dbUsersStep runs after every AWS resource (the instance is available by then) and before the
// outputs: it plans the db users from the database's catalog and, when apply is set, creates
// them. A plan that cannot reach the database says so in a note and does not fail.
func (p *Provisioner) dbUsersStep(ctx context.Context, e *env, plan *Plan, apply bool) error {
	cfg := p.cfg.DBUsers
	users := e.spec.dbUsers()
	if cfg == nil {
		return nil
	}
	notChecked := func(why string) error {
		plan.Notes = append(plan.Notes, "db users: not checked: "+why)
		return nil
	}
	if !e.known("instance.address", "instance.port") {
		if apply {
			return fmt.Errorf("db users of %s: the instance has no endpoint yet", e.spec.Name)
		}
		// Nothing to log in to yet: every user is a create.
		for _, u := range users {
			var gs []string
			for _, g := range u.Grants {
				gs = append(gs, g.String())
			}
			if u.Monitor && e.spec.Engine.Type == "mysql" {
				gs = append(gs, "replica status (REPLICATION CLIENT, MariaDB: SLAVE MONITOR)")
			}
			plan.Changes = append(plan.Changes, Change{Kind: kindDBUser, Name: u.Name, Action: ActionCreate,
				Fields: []FieldDiff{{Field: "grants", To: strings.Join(append([]string{"rds_iam"}, gs...), ", ")}}})
		}
		return notChecked("the instance does not exist yet")
	}
	user, password, err := p.masterCredentials(ctx, e)
	if err != nil {
		if apply {
			return err
		}
		return notChecked(err.Error())
	}
	addr := cfg.Endpoint
	if addr == "" {
		addr = net.JoinHostPort(e.get("instance.address"), e.get("instance.port"))
	}
	t := dbusers.Target{Engine: e.spec.Engine.Type, Addr: addr, ServerName: e.get("instance.address"), RootCAs: cfg.RootCAs,
		User: user, Password: password, Database: e.spec.grantsDatabase(), ConnectTimeout: cfg.ConnectTimeout}
	sess, err := dbusers.Connect(ctx, t)
	if err != nil {
		if !apply && errors.Is(err, dbusers.ErrUnreachable) {
			return notChecked(fmt.Sprintf("cannot reach the database (%v)", err))
		}
		return fmt.Errorf("db users of %s: %w; apply logs in as the master user at the instance endpoint: run it where that is reachable, or pass --db-endpoint host:port (a port-forward or a job in the VPC)", e.spec.Name, err)
	}
	defer sess.Close()
	changes, err := sess.Plan(ctx, users, cfg.RevokeRemoved)
	if err != nil {
		return fmt.Errorf("db users of %s: %w", e.spec.Name, err)
	}
	for _, c := range changes {
		pc := Change{Kind: kindDBUser, Name: c.User, Action: ActionNoop}
		switch c.Action {
		case dbusers.Create:
			pc.Action = ActionCreate
		case dbusers.Update:
			pc.Action = ActionUpdate
		case dbusers.Drop:
			pc.Action = ActionDelete
		case dbusers.Keep:
			plan.Notes = append(plan.Notes, fmt.Sprintf("db user %q is no longer in the spec: kept; apply --revoke-removed-users drops it", c.User))
		}
		for _, q := range c.Statements {
			pc.Fields = append(pc.Fields, FieldDiff{Field: "sql", To: q})
		}
		for _, n := range c.Notes {
			plan.Notes = append(plan.Notes, fmt.Sprintf("db user %q: %s", c.User, n))
		}
		plan.Changes = append(plan.Changes, pc)
	}
	if !apply {
		return nil
	}
	ran, err := sess.Apply(ctx, changes)
	for _, q := range ran {
		p.log.Info("db user statement", zap.String("sql", q))
	}
	if err != nil {
		return fmt.Errorf("db users of %s: %w", e.spec.Name, err)
	}
	p.log.Info("db users done", zap.Int("users", len(users)), zap.Int("statements", len(ran)))
	return nil
}

// masterCredentials reads the master user's name and password from the master secret: ours
// (master_password: secret) or the one RDS manages (MasterUserSecret.SecretArn).
func (p *Provisioner) masterCredentials(ctx context.Context, e *env) (user, password string, err error) {
	arn := proxySecret(e)
	if arn == Unknown {
		return "", "", fmt.Errorf("db users of %s: the master secret is not known yet", e.spec.Name)
	}
	out, err := e.c.Secrets.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(arn)})
	if err != nil {
		return "", "", awsErr(kindSecret, arn, "secretsmanager:GetSecretValue", err)
	}
	var v struct{ Username, Password string }
	if err := json.Unmarshal([]byte(deref(out.SecretString)), &v); err != nil || v.Password == "" {
		// Never the value itself in the message.
		return "", "", fmt.Errorf("secret %q: no password field in its JSON value", arn)
	}
	if v.Username == "" {
		v.Username = e.spec.Instance.MasterUsername
	}
	return v.Username, v.Password, nil
}
