package fakeaws

import (
	"fmt"
	"regexp"
	"strings"
)

// DB parameter groups, after "Working with parameter groups"
// (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_WorkingWithParamGroups.html) and
// the API references of the actions below. The fake knows a small catalogue of parameters per
// engine (paramCatalogue); an unknown name is refused the way RDS refuses it.

type paramGroup struct {
	name, family, desc, arn string
	isDefault               bool
	user                    map[string]string // parameters set by the user: name -> value
	tags                    map[string]string
}

type paramDef struct {
	static bool   // ApplyType static: takes effect only after a reboot
	def    string // engine default value
}

// paramCatalogue: a few real parameters of each engine with their apply type, as listed by
// DescribeDBParameters/DescribeEngineDefaultParameters for postgres16 and mysql8.0.
var paramCatalogue = map[string]map[string]paramDef{
	"postgres": {
		"rds.force_ssl": {false, "0"}, "max_connections": {true, "100"}, "shared_preload_libraries": {true, "pg_stat_statements"},
		"log_min_duration_statement": {false, "-1"}, "statement_timeout": {false, "0"}, "work_mem": {false, "4096"},
		"idle_in_transaction_session_timeout": {false, "86400000"}, "rds.logical_replication": {true, "0"}, "log_connections": {false, "0"},
	},
	"mysql": {
		"require_secure_transport": {false, "OFF"}, "max_connections": {false, "151"}, "performance_schema": {true, "0"},
		"long_query_time": {false, "10"}, "slow_query_log": {false, "0"}, "binlog_format": {false, "ROW"},
		"innodb_redo_log_capacity": {false, "104857600"}, "skip_name_resolve": {true, "0"},
	},
}

var familyRE = regexp.MustCompile(`^(postgres)(\d+)$|^(mysql)(\d+\.\d+)$`)

// engineFamily is the DBParameterGroupFamily of an engine version: postgresMAJOR, mysqlMAJOR.MINOR
// (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_DBEngineVersion.html).
func engineFamily(engine, version string) string {
	v := strings.Split(version, ".")
	switch {
	case engine == "postgres" && len(v) >= 1 && v[0] != "":
		return "postgres" + v[0]
	case engine == "mysql" && len(v) >= 2:
		return "mysql" + v[0] + "." + v[1]
	}
	return ""
}

func familyEngine(family string) string {
	if strings.HasPrefix(family, "mysql") {
		return "mysql"
	}
	return "postgres"
}

func (st *state) paramGroupAPI(c *reqCtx, action string) (any, *apiError) {
	switch action {
	case "DescribeDBEngineVersions":
		// An engine/version RDS does not offer yields an empty list, not an error.
		var items []X
		if f := engineFamily(c.get("Engine"), c.get("EngineVersion")); f != "" && c.get("EngineVersion") != "" {
			items = append(items, E("DBEngineVersion", T("Engine", c.get("Engine")), T("EngineVersion", c.get("EngineVersion")), T("DBParameterGroupFamily", f)))
		}
		return []X{E("DBEngineVersions", items...)}, nil
	case "CreateDBParameterGroup":
		name := strings.ToLower(c.get("DBParameterGroupName"))
		if st.paramGroups[name] != nil {
			return nil, errf(400, "DBParameterGroupAlreadyExists", "Parameter group %s already exists", name)
		}
		fam := c.get("DBParameterGroupFamily")
		if !familyRE.MatchString(fam) {
			return nil, errf(400, "InvalidParameterValue", "ParameterGroupFamily %s is not a valid parameter group family", fam)
		}
		if c.get("Description") == "" {
			return nil, errf(400, "InvalidParameterValue", "The parameter Description must be provided and must not be blank.")
		}
		g := &paramGroup{name: name, family: fam, desc: c.get("Description"), arn: c.arn("rds", "pg:"+name), user: map[string]string{}, tags: c.tagsFrom("Tags")}
		st.paramGroups[name] = g
		return []X{paramGroupX(g)}, nil
	case "DescribeDBParameterGroups":
		name := strings.ToLower(c.get("DBParameterGroupName"))
		var items []X
		for _, k := range sortedKeys(st.paramGroups) {
			if name == "" || k == name {
				items = append(items, paramGroupX(st.paramGroups[k]))
			}
		}
		if name != "" && len(items) == 0 {
			return nil, errf(404, "DBParameterGroupNotFound", "DBParameterGroup not found: %s", name)
		}
		return []X{E("DBParameterGroups", items...)}, nil
	case "DescribeDBParameters":
		g := st.paramGroups[strings.ToLower(c.get("DBParameterGroupName"))]
		if g == nil {
			return nil, errf(404, "DBParameterGroupNotFound", "DBParameterGroup not found: %s", c.get("DBParameterGroupName"))
		}
		src := c.get("Source") // user | engine-default | system; empty = all
		var items []X
		cat := paramCatalogue[familyEngine(g.family)]
		for _, n := range sortedKeys(cat) {
			d := cat[n]
			v, source := d.def, "engine-default"
			if uv, ok := g.user[n]; ok {
				v, source = uv, "user"
			}
			if src != "" && src != source {
				continue
			}
			applyType := "dynamic"
			if d.static {
				applyType = "static"
			}
			items = append(items, E("Parameter", T("ParameterName", n), T("ParameterValue", v), T("Source", source),
				T("ApplyType", applyType), T("IsModifiable", "true"), T("DataType", "string")))
		}
		return []X{E("Parameters", items...)}, nil
	case "ModifyDBParameterGroup", "ResetDBParameterGroup":
		return st.modifyParams(c, action)
	case "DeleteDBParameterGroup":
		name := strings.ToLower(c.get("DBParameterGroupName"))
		g := st.paramGroups[name]
		if g == nil {
			return nil, errf(404, "DBParameterGroupNotFound", "DBParameterGroup not found: %s", name)
		}
		if g.isDefault {
			return nil, errf(400, "InvalidDBParameterGroupState", "Default DBParameterGroup cannot be deleted: %s", name)
		}
		for _, in := range st.instances {
			if in.paramGroup == name {
				return nil, errf(400, "InvalidDBParameterGroupState", "One or more database instances are still members of this parameter group %s, so the group cannot be deleted", name)
			}
		}
		delete(st.paramGroups, name)
		return nil, nil
	}
	return nil, errf(400, "InvalidAction", "fakeaws: RDS action %s not implemented", action)
}

// modifyParams: ModifyDBParameterGroup takes at most 20 parameters per call, each with an
// ApplyMethod; a static parameter only takes pending-reboot; default groups cannot be modified
// (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_ModifyDBParameterGroup.html).
// Instances using the group see ParameterApplyStatus applying (dynamic changes) or
// pending-reboot (static ones).
func (st *state) modifyParams(c *reqCtx, action string) (any, *apiError) {
	name := strings.ToLower(c.get("DBParameterGroupName"))
	g := st.paramGroups[name]
	if g == nil {
		return nil, errf(404, "DBParameterGroupNotFound", "DBParameterGroup not found: %s", name)
	}
	if g.isDefault {
		return nil, errf(400, "InvalidParameterValue", "Default parameter groups cannot be modified: %s", name)
	}
	params := c.structs("Parameters")
	if action == "ModifyDBParameterGroup" && (len(params) == 0 || len(params) > 20) {
		return nil, errf(400, "InvalidParameterValue", "ModifyDBParameterGroup takes 1 to 20 parameters, got %d", len(params))
	}
	cat := paramCatalogue[familyEngine(g.family)]
	static := false
	if action == "ResetDBParameterGroup" && c.boolean("ResetAllParameters") {
		for n := range g.user {
			static = static || cat[n].static
		}
		g.user = map[string]string{}
	}
	for _, p := range params {
		n := p["ParameterName"]
		d, ok := cat[n]
		if !ok {
			return nil, errf(400, "InvalidParameterValue", "Could not find parameter with name: %s", n)
		}
		switch p["ApplyMethod"] {
		case "immediate":
			if d.static {
				return nil, errf(400, "InvalidParameterCombination", "cannot use immediate apply method for static parameter %s", n)
			}
		case "pending-reboot":
		default:
			return nil, errf(400, "InvalidParameterValue", "ApplyMethod for %s must be immediate or pending-reboot (got %q)", n, p["ApplyMethod"])
		}
		static = static || d.static || p["ApplyMethod"] == "pending-reboot"
		if action == "ResetDBParameterGroup" {
			delete(g.user, n)
		} else {
			g.user[n] = p["ParameterValue"]
		}
	}
	for _, in := range st.instances {
		if in.paramGroup != name || in.paramApply == "pending-reboot" {
			continue
		}
		in.paramApply = "applying"
		if static {
			in.paramApply = "pending-reboot"
		}
	}
	return []X{T("DBParameterGroupName", name)}, nil
}

// paramGroupFor is the group a new instance gets: the named one (which must exist and be of
// the engine version's family) or the engine's default group default.FAMILY.
func (st *state) paramGroupFor(name, engine, version string) (string, *apiError) {
	fam := engineFamily(engine, version)
	if name == "" {
		name = "default." + fam
		if st.paramGroups[name] == nil {
			st.paramGroups[name] = &paramGroup{name: name, family: fam, desc: "Default parameter group for " + fam, isDefault: true,
				arn: fmt.Sprintf("arn:aws:rds:::pg:%s", name), user: map[string]string{}, tags: map[string]string{}}
		}
		return name, nil
	}
	g := st.paramGroups[strings.ToLower(name)]
	if g == nil {
		return "", errf(404, "DBParameterGroupNotFound", "DBParameterGroup not found: %s", name)
	}
	if g.family != fam {
		return "", errf(400, "InvalidParameterCombination", "The parameter group %s with DBParameterGroupFamily %s can't be used for this instance. Use a parameter group with DBParameterGroupFamily %s.", g.name, g.family, fam)
	}
	return g.name, nil
}

// useParamGroup moves an instance to another group: the name changes at once, the parameters
// only after a reboot, so ParameterApplyStatus is pending-reboot
// (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_ModifyDBInstance.html, DBParameterGroupName).
func (st *state) useParamGroup(in *dbInstance, name string) *apiError {
	pg, aerr := st.paramGroupFor(name, in.engine, in.version)
	if aerr != nil {
		return aerr
	}
	in.paramGroup, in.paramApply = pg, "pending-reboot"
	return nil
}

func paramGroupX(g *paramGroup) X {
	return E("DBParameterGroup", T("DBParameterGroupName", g.name), T("DBParameterGroupFamily", g.family),
		T("Description", g.desc), T("DBParameterGroupArn", g.arn))
}

// ParameterGroup returns a parameter group's family, user-set parameters and tags.
func (s *Server) ParameterGroup(name string) (family string, params, tags map[string]string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.st.paramGroups[name]
	if g == nil {
		return "", nil, nil, false
	}
	return g.family, copyTags(g.user), copyTags(g.tags), true
}

// SetParameter changes a parameter behind the provisioner's back (drift).
func (s *Server) SetParameter(group, name, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.st.paramGroups[group]; g != nil {
		g.user[name] = value
	}
}
