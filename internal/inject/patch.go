package inject

import (
	"encoding/json"
	"fmt"
	"strconv"

	jsonpatch "github.com/evanphx/json-patch/v5"
	jsonpatchgen "gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
)

// podPatch builds the RFC 6902 patch from before to after in the terms Mutate works in: whole
// new containers and volumes are added at their index, existing ones get field-level diffs
// (their new env entries), everything else a plain diff. A generic diff of the two pods would
// turn a prepend into a field-by-field rewrite of element 0 into the sidecar, and any field of
// the raw object that this build's API types do not know would end up on the wrong container.
// The patch is checked by applying it before it is returned.
func podPatch(before, after *corev1.Pod) ([]byte, error) {
	var ops []jsonpatchgen.Operation
	var err error
	name := func(c corev1.Container) string { return c.Name }
	if ops, err = listPatch(ops, "/spec/initContainers", before.Spec.InitContainers, after.Spec.InitContainers, name); err != nil {
		return nil, err
	}
	if ops, err = listPatch(ops, "/spec/containers", before.Spec.Containers, after.Spec.Containers, name); err != nil {
		return nil, err
	}
	if ops, err = listPatch(ops, "/spec/volumes", before.Spec.Volumes, after.Spec.Volumes, func(v corev1.Volume) string { return v.Name }); err != nil {
		return nil, err
	}
	b, a := before.DeepCopy(), after.DeepCopy()
	for _, p := range []*corev1.Pod{b, a} {
		p.Spec.InitContainers, p.Spec.Containers, p.Spec.Volumes = nil, nil, nil
	}
	if ops, err = diffAt(ops, "", b, a); err != nil {
		return nil, err
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return nil, err
	}
	if err := verifyPatch(before, after, patch); err != nil {
		return nil, err
	}
	return patch, nil
}

// listPatch handles a list whose existing elements keep their relative order: elements of after
// that are not the next element of before are insertions. Indexes are those of the list as it
// is when each op applies, since JSONPatch applies ops in sequence.
func listPatch[T any](ops []jsonpatchgen.Operation, path string, before, after []T, name func(T) string) ([]jsonpatchgen.Operation, error) {
	if len(before) == 0 {
		if len(after) > 0 {
			ops = append(ops, jsonpatchgen.NewOperation("add", path, after))
		}
		return ops, nil
	}
	i := 0
	var err error
	for j, el := range after {
		elPath := path + "/" + strconv.Itoa(j)
		if i < len(before) && name(before[i]) == name(el) {
			if ops, err = diffAt(ops, elPath, before[i], el); err != nil {
				return nil, err
			}
			i++
			continue
		}
		ops = append(ops, jsonpatchgen.NewOperation("add", elPath, el))
	}
	if i != len(before) {
		return nil, fmt.Errorf("%s: the mutation removed or reordered existing elements", path)
	}
	return ops, nil
}

func diffAt(ops []jsonpatchgen.Operation, prefix string, before, after any) ([]jsonpatchgen.Operation, error) {
	a, err := json.Marshal(before)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(after)
	if err != nil {
		return nil, err
	}
	diff, err := jsonpatchgen.CreatePatch(a, b)
	if err != nil {
		return nil, err
	}
	for _, op := range diff {
		op.Path = prefix + op.Path
		ops = append(ops, op)
	}
	return ops, nil
}

func verifyPatch(before, after *corev1.Pod, patch []byte) error {
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return fmt.Errorf("patch self-check: %w", err)
	}
	b, err := json.Marshal(before)
	if err != nil {
		return err
	}
	a, err := json.Marshal(after)
	if err != nil {
		return err
	}
	got, err := p.Apply(b)
	if err != nil {
		return fmt.Errorf("patch self-check: applying: %w", err)
	}
	if !jsonpatch.Equal(got, a) {
		return fmt.Errorf("patch self-check: the patched pod differs from the mutated one")
	}
	return nil
}
