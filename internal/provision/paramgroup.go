package provision

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/rds"
	rdst "github.com/aws/aws-sdk-go-v2/service/rds/types"
	"go.uber.org/zap"
)

// ---- DB parameter group -------------------------------------------------------------------

// The instance gets a parameter group of ours: TLS required (TLS in transit is a requirement
// of the architecture, and the default groups cannot be modified), plus the parameters the
// spec names. Static parameters take effect only after a reboot, which apply does not do: it
// says so (see instanceHandler.export).

const kindParamGroup = "db-parameter-group"

func paramGroupName(s *Spec) string { return baseName(s) }

// tlsParameter is the parameter that makes the engine refuse connections without TLS
// (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/PostgreSQL.Concepts.General.SSL.html,
// https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/mysql-ssl-connections.html).
func tlsParameter(s *Spec) (name, value string) {
	if s.Engine.Type == "mysql" {
		return "require_secure_transport", "ON"
	}
	return "rds.force_ssl", "1"
}

func desiredParameters(s *Spec) map[string]string {
	p := map[string]string{}
	for k, v := range s.Instance.Parameters {
		p[k] = v
	}
	n, v := tlsParameter(s)
	p[n] = v
	return p
}

type paramGroupHandler struct{}

func (paramGroupHandler) kind() string        { return kindParamGroup }
func (paramGroupHandler) immutable() []string { return []string{"family"} }

func (paramGroupHandler) desired(e *env) []*State {
	return []*State{{Kind: kindParamGroup, Name: paramGroupName(e.spec), Tags: ownTags(e.spec),
		Attrs: map[string]string{"family": e.get("paramgroup.family"), "parameters": mustJSON(desiredParameters(e.spec))}}}
}

// family asks RDS for the parameter group family of the spec's engine version (postgres16,
// mysql8.0, ...). A version RDS no longer lists (deprecated minor versions disappear from
// DescribeDBEngineVersions) falls back to the family derived from it, postgresMAJOR or
// mysqlMAJOR.MINOR, RDS's naming: plan and destroy of an existing database must not fail on it.
func (paramGroupHandler) family(ctx context.Context, e *env) error {
	if e.known("paramgroup.family") {
		return nil
	}
	out, err := e.c.RDS.DescribeDBEngineVersions(ctx, &rds.DescribeDBEngineVersionsInput{Engine: aws.String(e.spec.Engine.Type), EngineVersion: aws.String(e.spec.Engine.Version)})
	if err != nil {
		return awsErr(kindParamGroup, paramGroupName(e.spec), "rds:DescribeDBEngineVersions", err)
	}
	if len(out.DBEngineVersions) > 0 && deref(out.DBEngineVersions[0].DBParameterGroupFamily) != "" {
		e.out["paramgroup.family"] = deref(out.DBEngineVersions[0].DBParameterGroupFamily)
		return nil
	}
	fam := derivedFamily(e.spec)
	if fam == "" {
		return fmt.Errorf("engine %s version %s: RDS offers no such engine version in %s (rds:DescribeDBEngineVersions is empty) and no parameter group family can be derived from it; check engine.version", e.spec.Engine.Type, e.spec.Engine.Version, e.region)
	}
	e.p.log.Warn("engine version not listed by rds:DescribeDBEngineVersions; using the parameter group family derived from it",
		zap.String("engine", e.spec.Engine.Type), zap.String("version", e.spec.Engine.Version), zap.String("family", fam))
	e.out["paramgroup.family"] = fam
	return nil
}

func derivedFamily(s *Spec) string {
	v := strings.Split(s.Engine.Version, ".")
	switch {
	case s.Engine.Type == "postgres" && v[0] != "":
		return "postgres" + v[0]
	case s.Engine.Type == "mysql" && len(v) >= 2:
		return "mysql" + v[0] + "." + v[1]
	}
	return ""
}

func (h paramGroupHandler) observe(ctx context.Context, e *env) ([]*State, error) {
	name := paramGroupName(e.spec)
	if err := h.family(ctx, e); err != nil {
		return nil, err
	}
	out, err := e.c.RDS.DescribeDBParameterGroups(ctx, &rds.DescribeDBParameterGroupsInput{DBParameterGroupName: aws.String(name)})
	if isCode(err, "DBParameterGroupNotFound", "DBParameterGroupNotFoundFault") {
		return nil, nil
	}
	if err != nil {
		return nil, awsErr(kindParamGroup, name, "rds:DescribeDBParameterGroups", err)
	}
	var res []*State
	for _, g := range out.DBParameterGroups {
		tags, err := rdsTags(ctx, e, kindParamGroup, name, deref(g.DBParameterGroupArn))
		if err != nil {
			return nil, err
		}
		st := &State{Kind: kindParamGroup, Name: deref(g.DBParameterGroupName), ID: deref(g.DBParameterGroupArn), Status: "available",
			Attrs: map[string]string{"family": deref(g.DBParameterGroupFamily)}, Tags: tags}
		if st.Owned(e.spec.Name) {
			user, err := h.parameters(ctx, e, name, "user")
			if err != nil {
				return nil, err
			}
			vals := map[string]string{}
			for _, p := range user {
				vals[deref(p.ParameterName)] = deref(p.ParameterValue)
			}
			st.Attrs["parameters"] = mustJSON(vals)
		}
		res = append(res, st)
	}
	return res, nil
}

// parameters lists the group's parameters from source ("user"; "" = all), every page.
func (paramGroupHandler) parameters(ctx context.Context, e *env, name, source string) ([]rdst.Parameter, error) {
	in := &rds.DescribeDBParametersInput{DBParameterGroupName: aws.String(name)}
	if source != "" {
		in.Source = aws.String(source)
	}
	var all []rdst.Parameter
	for {
		out, err := e.c.RDS.DescribeDBParameters(ctx, in)
		if err != nil {
			return nil, awsErr(kindParamGroup, name, "rds:DescribeDBParameters", err)
		}
		all = append(all, out.Parameters...)
		if deref(out.Marker) == "" {
			return all, nil
		}
		in.Marker = out.Marker
	}
}

func (h paramGroupHandler) create(ctx context.Context, e *env, d *State) error {
	_, err := e.c.RDS.CreateDBParameterGroup(ctx, &rds.CreateDBParameterGroupInput{DBParameterGroupName: aws.String(d.Name),
		DBParameterGroupFamily: aws.String(d.Attrs["family"]), Description: aws.String("rds-valet: database " + e.spec.Name), Tags: rdsTagList(d.Tags)})
	if err != nil && !isCode(err, "DBParameterGroupAlreadyExists") {
		return awsErr(kindParamGroup, d.Name, "rds:CreateDBParameterGroup", err)
	}
	return h.setParameters(ctx, e, d.Name, desiredParameters(e.spec), nil)
}

func (h paramGroupHandler) update(ctx context.Context, e *env, d, o *State, fields []FieldDiff) error {
	for _, f := range fields {
		if f.Field != "parameters" {
			continue
		}
		var have map[string]string
		_ = json.Unmarshal([]byte(f.From), &have)
		want := desiredParameters(e.spec)
		set := map[string]string{}
		var reset []string
		for k, v := range want {
			if hv, ok := have[k]; !ok || hv != v {
				set[k] = v
			}
		}
		for k := range have {
			if _, ok := want[k]; !ok {
				reset = append(reset, k)
			}
		}
		if err := h.setParameters(ctx, e, d.Name, set, reset); err != nil {
			return err
		}
	}
	return rdsRetag(ctx, e, kindParamGroup, d.Name, o.ID, tagChanges(fields, d))
}

// setParameters sets and resets parameters, at most 20 per call (the ModifyDBParameterGroup
// limit), each with the apply method its type allows: immediate for dynamic parameters,
// pending-reboot for static ones (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_ModifyDBParameterGroup.html).
func (h paramGroupHandler) setParameters(ctx context.Context, e *env, name string, set map[string]string, reset []string) error {
	if len(set)+len(reset) == 0 {
		return nil
	}
	all, err := h.parameters(ctx, e, name, "")
	if err != nil {
		return err
	}
	static := map[string]bool{}
	for _, p := range all {
		static[deref(p.ParameterName)] = deref(p.ApplyType) == "static"
	}
	method := func(n string) rdst.ApplyMethod {
		if static[n] {
			return rdst.ApplyMethodPendingReboot
		}
		return rdst.ApplyMethodImmediate
	}
	var params []rdst.Parameter
	for _, n := range sortedKeys(set) {
		params = append(params, rdst.Parameter{ParameterName: aws.String(n), ParameterValue: aws.String(set[n]), ApplyMethod: method(n)})
	}
	for i := 0; i < len(params); i += 20 {
		batch := params[i:min(i+20, len(params))]
		if _, err := e.c.RDS.ModifyDBParameterGroup(ctx, &rds.ModifyDBParameterGroupInput{DBParameterGroupName: aws.String(name), Parameters: batch}); err != nil {
			return awsErr(kindParamGroup, name, "rds:ModifyDBParameterGroup", err)
		}
	}
	sort.Strings(reset)
	var rp []rdst.Parameter
	for _, n := range reset {
		rp = append(rp, rdst.Parameter{ParameterName: aws.String(n), ApplyMethod: method(n)})
	}
	for i := 0; i < len(rp); i += 20 {
		batch := rp[i:min(i+20, len(rp))]
		if _, err := e.c.RDS.ResetDBParameterGroup(ctx, &rds.ResetDBParameterGroupInput{DBParameterGroupName: aws.String(name), Parameters: batch}); err != nil {
			return awsErr(kindParamGroup, name, "rds:ResetDBParameterGroup", err)
		}
	}
	return nil
}

func (paramGroupHandler) delete(ctx context.Context, e *env, o *State) error {
	_, err := e.c.RDS.DeleteDBParameterGroup(ctx, &rds.DeleteDBParameterGroupInput{DBParameterGroupName: aws.String(o.Name)})
	if isCode(err, "DBParameterGroupNotFound", "DBParameterGroupNotFoundFault") {
		return nil
	}
	return awsErr(kindParamGroup, o.Name, "rds:DeleteDBParameterGroup", err)
}

func (paramGroupHandler) ready(*State) (bool, error) { return true, nil }
func (paramGroupHandler) export(e *env, o *State)    { e.out["paramgroup.name"] = o.Name }
