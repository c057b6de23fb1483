package provision

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/rdsvalet/rds-valet/internal/config"
)

// Outputs is what the sidecar needs to reach this database.
type Outputs struct {
	Database string
	Region   string
	Engine   string
	Port     int32
	Paths    []PathOut
	Users    []UserOut
	// Replicas are the spec's read replicas; MaxReplicaLag is the reader listener's limit.
	Replicas      []ReplicaOut
	MaxReplicaLag time.Duration
	// ProbeDatabase is the database the reader listener's probe user logs in to: PostgreSQL's
	// access.database (a login defaults to a database named as the user, which RDS does not
	// have); "" on MySQL, where a login needs none.
	ProbeDatabase string
}

// ReplicaOut is one read replica: where it lives and, once it exists, its instance endpoint.
type ReplicaOut struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"`
	Region     string   `json:"region"`
	ResourceID string   `json:"resource_id,omitempty"`
	Path       *PathOut `json:"path,omitempty"`
}

// PathOut is one path with its three names (docs/architecture.md, "A path is three names, not
// one"); it is the sidecar config's own path type, so what the provisioner finds is what the
// sidecar reads.
type PathOut = config.Path

// UserOut is one ServiceAccount allowed in, its db user and IRSA role.
type UserOut struct {
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"service_account"`
	DBUser         string `json:"db_user"`
	RoleARN        string `json:"role_arn"`
}

func (e *env) outputs() *Outputs {
	port := strconv.Itoa(int(e.spec.Port()))
	o := &Outputs{Database: e.spec.Name, Region: e.region, Engine: e.spec.Engine.Type, Port: e.spec.Port()}
	proxy := e.get("proxy.endpoint")
	if e.known("vpce.dns", "proxy.endpoint") {
		// Dial the VPC endpoint, but verify TLS and sign the token for the proxy's own name.
		o.Paths = append(o.Paths, PathOut{Name: "privatelink", Address: e.get("vpce.dns") + ":" + port, TLSServerName: proxy, TokenHost: proxy + ":" + port})
	}
	if e.known("proxy.endpoint") {
		o.Paths = append(o.Paths, PathOut{Name: "rds-proxy", Address: proxy + ":" + port, TLSServerName: proxy, TokenHost: proxy + ":" + port})
	}
	if e.known("instance.address") {
		inst := e.get("instance.address")
		o.Paths = append(o.Paths, PathOut{Name: "instance", Address: inst + ":" + port, TLSServerName: inst, TokenHost: inst + ":" + port})
	}
	o.Replicas, o.MaxReplicaLag = e.replicaOutputs(), e.spec.Reader.MaxReplicaLag
	if e.spec.Engine.Type == "postgres" {
		o.ProbeDatabase = e.spec.grantsDatabase()
	}
	if o.MaxReplicaLag == 0 {
		o.MaxReplicaLag = DefaultMaxReplicaLag
	}
	for _, sa := range e.spec.Access.ServiceAccounts {
		arn := e.out["role."+irsaRoleName(e.spec, sa)+".arn"]
		o.Users = append(o.Users, UserOut{Namespace: sa.Namespace, ServiceAccount: sa.Name, DBUser: sa.DBUser, RoleARN: arn})
	}
	return o
}

// SidecarConfig renders the sidecar's config file for this database (docs/configuration.md).
// The db user is the app's choice at login; the comment lists which users each ServiceAccount's
// IRSA role may connect as.
func (o *Outputs) SidecarConfig() ([]byte, error) {
	if len(o.Paths) == 0 {
		return nil, fmt.Errorf("database %s: no path is known yet (nothing created?); run apply first", o.Database)
	}
	listeners := []config.Listener{{
		Name: o.Database, Engine: o.Engine, Listen: fmt.Sprintf("127.0.0.1:%d", o.Port),
		Auth: config.Auth{Mode: config.AuthIAM}, TLS: config.TLS{Mode: config.TLSVerifyFull}, Paths: o.Paths}}
	if r := o.readerListener(); r != nil {
		listeners = append(listeners, *r)
	}
	body, err := config.Marshal(&config.Config{AWS: config.AWS{Region: o.Region}, Listeners: listeners})
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Sidecar config for database %s, written by the rds-valet provisioner; re-run apply instead of editing.\n", o.Database)
	fmt.Fprintf(&b, "# DB users (ServiceAccount -> db user, IRSA role to annotate the ServiceAccount with):\n")
	for _, u := range o.Users {
		fmt.Fprintf(&b, "#   %s/%s -> %s (%s)\n", u.Namespace, u.ServiceAccount, u.DBUser, u.RoleARN)
	}
	for _, r := range o.Replicas {
		if r.Region != o.Region && r.Path != nil && len(o.Users) > 0 {
			fmt.Fprintf(&b, "# Cross-region replica %s in %s: in %s-reader with its region, used only while no replica in %s is fresh\n", r.ID, r.Region, o.Database, o.Region)
		}
	}
	b.Write(body)
	return b.Bytes(), nil
}

// ReaderPort is the reader listener's port: the writer's plus one (5433, 3307).
func (o *Outputs) ReaderPort() int32 { return o.Port + 1 }

// readerListener is the listener for reads when replicas exist: role reader, the replicas'
// instance endpoints, then the primary's (the fallback), statically listed. The RDS Proxy's
// default target group serves only the writer, so replicas are reached directly. A
// cross-region replica's path carries its Region: its IAM token is signed there, and the
// sidecar takes it only while no replica of its own Region is fresh.
func (o *Outputs) readerListener() *config.Listener {
	var paths []config.Path
	for _, r := range o.Replicas {
		if r.Path == nil {
			continue
		}
		p := *r.Path
		if r.Region != o.Region {
			p.Region = r.Region
		}
		paths = append(paths, p)
	}
	// The topology monitor logs in to each instance to read its role and lag, as a db user the
	// spec grants (the first app's, Spec.ProbeUser); with no app user there is no one to log in as.
	if len(paths) == 0 || len(o.Users) == 0 {
		return nil
	}
	for _, p := range o.Paths {
		if p.Name == "instance" {
			paths = append(paths, p)
		}
	}
	return &config.Listener{Name: o.Database + "-reader", Engine: o.Engine, Listen: fmt.Sprintf("127.0.0.1:%d", o.ReaderPort()),
		Auth: config.Auth{Mode: config.AuthIAM}, TLS: config.TLS{Mode: config.TLSVerifyFull}, Paths: paths, Role: config.RoleReader,
		Health:  config.Health{LoginUser: o.Users[0].DBUser, LoginDatabase: o.ProbeDatabase}, // = Spec.probeUser
		Cluster: config.Cluster{Discovery: "static", MaxReplicaLag: o.MaxReplicaLag, ReaderFallback: "writer"}}
}

// ConfigMaps renders one ConfigMap (data key config.yaml) per namespace: the given one, or
// else every namespace a ServiceAccount of the spec lives in.
func (o *Outputs) ConfigMaps(name, namespace string) ([]byte, error) {
	cfg, err := o.SidecarConfig()
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = "rdsvalet-" + o.Database
	}
	nss := map[string]bool{}
	if namespace != "" {
		nss[namespace] = true
	} else {
		for _, u := range o.Users {
			nss[u.Namespace] = true
		}
	}
	if len(nss) == 0 {
		nss["default"] = true
	}
	var docs []string
	for _, ns := range sortedKeys(nss) {
		var users []string
		for _, u := range o.Users {
			if u.Namespace == ns || namespace != "" {
				users = append(users, fmt.Sprintf("%s/%s=%s", u.Namespace, u.ServiceAccount, u.DBUser))
			}
		}
		sort.Strings(users)
		cm := map[string]any{
			"apiVersion": "v1", "kind": "ConfigMap",
			"metadata": map[string]any{"name": name, "namespace": ns,
				"labels":      map[string]string{"app.kubernetes.io/managed-by": "rds-valet", "rdsvalet.io/database": o.Database},
				"annotations": map[string]string{"rdsvalet.io/db-users": strings.Join(users, ",")}},
			"data": map[string]string{"config.yaml": string(cfg)},
		}
		b, err := yaml.Marshal(cm)
		if err != nil {
			return nil, fmt.Errorf("render ConfigMap: %w", err)
		}
		docs = append(docs, string(b))
	}
	return []byte(strings.Join(docs, "---\n")), nil
}
