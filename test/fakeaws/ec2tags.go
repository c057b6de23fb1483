package fakeaws

import "strings"

// EC2 tagging calls the provisioner's apply lease relies on (CreateTags, DescribeTags,
// DeleteTags), answered for every EC2 resource the fake keeps tags on.

// describeTags: DescribeTags filters on key, resource-id, resource-type and value, joined with
// AND, and answers tagSet items {resourceId, resourceType, key, value}
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeTags.html).
func (st *state) describeTags(c *reqCtx) (any, *apiError) {
	filters := ec2Filters(c)
	for name := range filters {
		switch name {
		case "key", "resource-id", "resource-type", "value":
		default:
			if !strings.HasPrefix(name, "tag:") {
				return nil, errf(400, "InvalidParameterValue", "The filter '%s' is invalid", name)
			}
		}
	}
	type res struct {
		id, typ string
		tags    map[string]string
	}
	var all []res
	for _, id := range sortedKeys(st.sgs) {
		all = append(all, res{id, "security-group", st.sgs[id].tags})
	}
	for _, id := range sortedKeys(st.services) {
		all = append(all, res{id, "vpc-endpoint-service", st.services[id].tags})
	}
	for _, id := range sortedKeys(st.endpoints) {
		all = append(all, res{id, "vpc-endpoint", st.endpoints[id].tags})
	}
	var items []X
	for _, r := range all {
		// tag:KEY filters select resources; the other filters select single tags.
		resFilters := map[string][]string{}
		for name, vals := range filters {
			if strings.HasPrefix(name, "tag:") {
				resFilters[name] = vals
			}
		}
		if !matches(resFilters, r.tags, nil) {
			continue
		}
		for _, k := range sortedKeys(r.tags) {
			attrs := map[string]string{"key": k, "resource-id": r.id, "resource-type": r.typ, "value": r.tags[k]}
			ok := true
			for name, vals := range filters {
				if !strings.HasPrefix(name, "tag:") && !contains(vals, attrs[name]) {
					ok = false
				}
			}
			if ok {
				items = append(items, E("item", T("resourceId", r.id), T("resourceType", r.typ), T("key", k), T("value", r.tags[k])))
			}
		}
	}
	return []X{E("tagSet", items...)}, nil
}

// deleteTags: a tag given with a value is deleted only if its value matches (an empty string
// matches only an empty value); a tag given without a value is deleted whatever its value
// (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeleteTags.html).
func deleteTags(tags map[string]string, spec []fields) {
	for _, t := range spec {
		want, withValue := t["Value"]
		if have, ok := tags[t["Key"]]; ok && (!withValue || have == want) {
			delete(tags, t["Key"])
		}
	}
}
