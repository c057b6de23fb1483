package world

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/rdsvalet/rds-valet/test/harness/awsiam"
	"github.com/rdsvalet/rds-valet/test/harness/fakests"
)

// startSTS starts the fake STS as the world's cluster OIDC issuer, with the role set up the
// way the provisioner creates an IRSA role (its trust policy, its rds-db:connect policy), and
// writes the pod's projected tokens.
func (w *World) startSTS(o Options) error {
	id := randHex(32)
	host := "oidc.eks." + o.Region + ".amazonaws.com/id/" + strings.ToUpper(id)
	w.OIDCProviderARN = "arn:aws:iam::" + accountID + ":oidc-provider/" + host
	// Resource ids as RDS gives them to proxies (prx- and 17 hex digits), one per stand-in.
	w.DBUserResource = "arn:aws:rds-db:" + o.Region + ":" + accountID + ":dbuser:prx-" + id[:17]
	resources := []string{w.DBUserResource}
	if o.MySQL {
		w.MySQLDBUserResource = "arn:aws:rds-db:" + o.Region + ":" + accountID + ":dbuser:prx-" + id[15:32]
		resources = append(resources, w.MySQLDBUserResource)
	}
	users := o.DBUsersAllowed
	if users == nil {
		users = []string{o.DB}
	}
	var allowed []string
	for _, r := range resources {
		for _, u := range users {
			allowed = append(allowed, r+"/"+u)
		}
	}
	policy := awsiam.AllowPolicy("rds-db:connect", allowed...)
	if len(allowed) == 0 {
		policy = `{"Version":"2012-10-17","Statement":[]}`
	}
	trustSub := o.TrustSubject
	if trustSub == "" {
		trustSub = DefaultServiceAccount
	}
	// The provisioner's trust for an IRSA role (internal/provision appRoleTrust), plus the Pod
	// Identity trust so that the same role serves PodIdentityEnv.
	trust := awsiam.Merge(awsiam.IRSATrust(w.OIDCProviderARN, host, trustSub), awsiam.PodIdentityTrust())
	var err error
	if w.STS, err = fakests.Start(fakests.Options{RoleARN: fakests.DefaultRoleARN, Issuer: "https://" + host, Subject: DefaultServiceAccount,
		Trust: trust, Policies: []string{policy}, Duration: o.CredentialDuration, Logf: o.Logf}); err != nil {
		return err
	}
	w.WebIdentityToken = w.STS.NewToken()
	tokDir := filepath.Join(w.Dir, "serviceaccount")
	podDir := filepath.Join(w.Dir, "eks-pod-identity-token")
	for _, d := range []string{tokDir, podDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("world: %w", err)
		}
	}
	if w.TokenFile, err = fakests.WriteTokenFile(tokDir, w.WebIdentityToken); err != nil {
		return err
	}
	if w.PodIdentityTokenFile, err = fakests.WriteTokenFile(podDir, w.STS.PodIdentityToken()); err != nil {
		return err
	}
	return nil
}

// AuthorizeDBConnect is the stand-ins' Authorize: the credential's role must be allowed
// rds-db:connect on dbUserARN ("Creating and using an IAM policy for IAM database access",
// https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.IAMDBAuth.IAMPolicy.html).
// Stand-ins a test starts itself can use it with DBUserResource or MySQLDBUserResource.
func (w *World) AuthorizeDBConnect(accessKeyID, dbUserARN string) error {
	return w.STS.Authorized(accessKeyID, "rds-db:connect", dbUserARN)
}

func randHex(n int) string {
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return fmt.Sprintf("%x", b)[:n]
}
