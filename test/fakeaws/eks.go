package fakeaws

import (
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// EKS Pod Identity associations, over EKS's REST-JSON protocol
// (https://docs.aws.amazon.com/eks/latest/APIReference/API_CreatePodIdentityAssociation.html and
// its List/Describe/Update/Delete siblings). Clusters are not created through the API: a test
// declares them with AddEKSCluster.

type podIdentityAssociation struct {
	id, arn, cluster, namespace, serviceAccount, roleArn, clientToken string
	tags                                                              map[string]string
	created, modified                                                 time.Time
}

type eksState struct {
	clusters     map[string]string                  // name -> account
	associations map[string]*podIdentityAssociation // by id
}

// restReq is the REST part of a request: the path parameters and the query string.
type restReq struct {
	cluster, id string
	query       url.Values
}

func (st *state) eks() *eksState {
	if st.eksSt == nil {
		st.eksSt = &eksState{clusters: map[string]string{}, associations: map[string]*podIdentityAssociation{}}
	}
	return st.eksSt
}

// AddEKSCluster declares an EKS cluster in the fake's account, so that pod identity
// associations can be made in it.
func (s *Server) AddEKSCluster(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.eks().clusters[name] = s.cfg.AccountID
}

// PodIdentityAssociation is one association as the fake holds it.
type PodIdentityAssociation struct {
	ID, Cluster, Namespace, ServiceAccount, RoleARN string
	Tags                                            map[string]string
}

// PodIdentityAssociations lists every association, sorted by namespace/service account.
func (s *Server) PodIdentityAssociations() []PodIdentityAssociation {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []PodIdentityAssociation
	for _, a := range s.st.eks().associations {
		out = append(out, PodIdentityAssociation{ID: a.id, Cluster: a.cluster, Namespace: a.namespace, ServiceAccount: a.serviceAccount,
			RoleARN: a.roleArn, Tags: copyTags(a.tags)})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Namespace+"/"+out[i].ServiceAccount < out[j].Namespace+"/"+out[j].ServiceAccount
	})
	return out
}

var eksPathRE = regexp.MustCompile(`^/clusters/([^/]+)/pod-identity-associations(?:/([^/]+))?$`)

// eksRoute maps a REST request to its operation.
func eksRoute(method, path string, q url.Values) (string, *restReq) {
	if arn, ok := strings.CutPrefix(path, "/tags/"); ok && method == "POST" {
		arn, _ = url.PathUnescape(arn)
		return "TagResource", &restReq{id: arn, query: q}
	}
	m := eksPathRE.FindStringSubmatch(path)
	if m == nil {
		return "", nil
	}
	cluster, _ := url.PathUnescape(m[1])
	rr := &restReq{cluster: cluster, id: m[2], query: q}
	switch {
	case m[2] == "" && method == "POST":
		return "CreatePodIdentityAssociation", rr
	case m[2] == "" && method == "GET":
		return "ListPodIdentityAssociations", rr
	case method == "GET":
		return "DescribePodIdentityAssociation", rr
	case method == "POST":
		return "UpdatePodIdentityAssociation", rr
	case method == "DELETE":
		return "DeletePodIdentityAssociation", rr
	}
	return "", nil
}

func (a *podIdentityAssociation) out() map[string]any {
	return map[string]any{"clusterName": a.cluster, "namespace": a.namespace, "serviceAccount": a.serviceAccount, "roleArn": a.roleArn,
		"associationArn": a.arn, "associationId": a.id, "tags": copyTags(a.tags),
		"createdAt": float64(a.created.Unix()), "modifiedAt": float64(a.modified.Unix())}
}

var k8sNamePattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)

func (st *state) eksAPI(c *reqCtx, action string) (any, *apiError) {
	es := st.eks()
	rr := c.rest
	if rr == nil {
		return nil, errf(404, "NotFoundException", "fakeaws: EKS route not implemented")
	}
	if action == "TagResource" {
		tags := map[string]string{}
		if m, ok := c.json["tags"].(map[string]any); ok {
			for k, v := range m {
				tags[k], _ = v.(string)
			}
		}
		if e := st.eksTagResource(rr.id, tags); e != nil {
			return nil, e
		}
		return map[string]any{}, nil
	}
	if acct, ok := es.clusters[rr.cluster]; !ok || acct != c.account {
		return nil, errf(404, "ResourceNotFoundException", "No cluster found for name: %s.", rr.cluster)
	}
	find := func() (*podIdentityAssociation, *apiError) {
		a := es.associations[rr.id]
		if a == nil || a.cluster != rr.cluster {
			return nil, errf(404, "ResourceNotFoundException", "Association %s not found in cluster %s.", rr.id, rr.cluster)
		}
		return a, nil
	}
	// The role must be a role ARN of the cluster's account (a role of another account is
	// reached with targetRoleArn, which the fake does not model).
	checkRole := func(arn string) *apiError {
		if !roleARNPattern.MatchString(arn) || accountOfARN(arn) != c.account {
			return errf(400, "InvalidParameterException", "Role %s is not a valid IAM role ARN of account %s", arn, c.account)
		}
		return nil
	}
	switch action {
	case "CreatePodIdentityAssociation":
		ns, sa, role := c.jstr("namespace"), c.jstr("serviceAccount"), c.jstr("roleArn")
		if !k8sNamePattern.MatchString(ns) || !k8sNamePattern.MatchString(sa) {
			return nil, errf(400, "InvalidParameterException", "namespace and serviceAccount must be Kubernetes names")
		}
		if e := checkRole(role); e != nil {
			return nil, e
		}
		tok := c.jstr("clientRequestToken")
		for _, a := range es.associations {
			if a.cluster != rr.cluster || a.namespace != ns || a.serviceAccount != sa {
				continue
			}
			// clientRequestToken: "A unique, case-sensitive identifier that you provide to
			// ensure the idempotency of the request": the same token answers the same association.
			if tok != "" && a.clientToken == tok && a.roleArn == role {
				return map[string]any{"association": a.out()}, nil
			}
			return nil, errf(409, "ResourceInUseException", "Association already exists: %s for service account %s in namespace %s", a.id, sa, ns)
		}
		tags := map[string]string{}
		if m, ok := c.json["tags"].(map[string]any); ok {
			for k, v := range m {
				tags[k], _ = v.(string)
			}
		}
		id := "a-" + st.id("", 17)
		now := time.Now().UTC()
		a := &podIdentityAssociation{id: id, arn: "arn:aws:eks:" + c.region + ":" + c.account + ":podidentityassociation/" + rr.cluster + "/" + id,
			cluster: rr.cluster, namespace: ns, serviceAccount: sa, roleArn: role, clientToken: tok, tags: tags, created: now, modified: now}
		es.associations[id] = a
		return map[string]any{"association": a.out()}, nil
	case "ListPodIdentityAssociations":
		// Filters namespace and serviceAccount; maxResults 1-100 with nextToken paging.
		ns, sa := rr.query.Get("namespace"), rr.query.Get("serviceAccount")
		max := 100
		if v := rr.query.Get("maxResults"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 100 {
				return nil, errf(400, "InvalidParameterException", "maxResults must be between 1 and 100")
			}
			max = n
		}
		var all []*podIdentityAssociation
		for _, a := range es.associations {
			if a.cluster == rr.cluster && (ns == "" || a.namespace == ns) && (sa == "" || a.serviceAccount == sa) {
				all = append(all, a)
			}
		}
		sort.Slice(all, func(i, j int) bool { return all[i].id < all[j].id })
		start := 0
		if t := rr.query.Get("nextToken"); t != "" {
			n, err := strconv.Atoi(t)
			if err != nil || n < 0 || n > len(all) {
				return nil, errf(400, "InvalidParameterException", "The nextToken is not valid")
			}
			start = n
		}
		end := start + max
		if end > len(all) {
			end = len(all)
		}
		items := []map[string]any{}
		for _, a := range all[start:end] {
			items = append(items, map[string]any{"clusterName": a.cluster, "namespace": a.namespace, "serviceAccount": a.serviceAccount,
				"associationArn": a.arn, "associationId": a.id})
		}
		out := map[string]any{"associations": items}
		if end < len(all) {
			out["nextToken"] = strconv.Itoa(end)
		}
		return out, nil
	case "DescribePodIdentityAssociation":
		a, e := find()
		if e != nil {
			return nil, e
		}
		return map[string]any{"association": a.out()}, nil
	case "UpdatePodIdentityAssociation":
		a, e := find()
		if e != nil {
			return nil, e
		}
		if role := c.jstr("roleArn"); role != "" {
			if e := checkRole(role); e != nil {
				return nil, e
			}
			a.roleArn = role
		}
		a.modified = time.Now().UTC()
		return map[string]any{"association": a.out()}, nil
	case "DeletePodIdentityAssociation":
		a, e := find()
		if e != nil {
			return nil, e
		}
		delete(es.associations, a.id)
		return map[string]any{"association": a.out()}, nil
	}
	return nil, errf(400, "InvalidAction", "fakeaws: EKS action %s not implemented", action)
}

// eksTagResource adds tags to an association (POST /tags/ARN,
// https://docs.aws.amazon.com/eks/latest/APIReference/API_TagResource.html).
func (st *state) eksTagResource(arn string, tags map[string]string) *apiError {
	for _, a := range st.eks().associations {
		if a.arn == arn {
			for k, v := range tags {
				a.tags[k] = v
			}
			return nil
		}
	}
	return errf(404, "NotFoundException", "Resource %s not found", arn)
}
