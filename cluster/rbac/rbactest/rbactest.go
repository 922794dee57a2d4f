// Package rbactest holds a command's permissions and its shipped RBAC
// manifest in step, for tests.
package rbactest

import (
	"os"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/certagent/certagent/cluster/rbac"
)

// GrantsExactly fails t unless the Roles and ClusterRoles of the manifest
// grant exactly perms: a rule the command does not need fails, and so does a
// need the manifest does not grant; a wildcard or non-resource rule fails.
func GrantsExactly(t testing.TB, manifest string, perms []rbac.Permission) {
	t.Helper()
	granted := grants(t, manifest)
	needed := map[string]bool{}
	for _, p := range perms {
		a := p.Attrs
		res := a.Resource
		if a.Subresource != "" {
			res += "/" + a.Subresource
		}
		needed[key(a.Namespace, a.Group, res, a.Name, a.Verb)] = true
	}
	for k := range needed {
		if !granted[k] {
			t.Errorf("the command needs %s; %s does not grant it", k, manifest)
		}
	}
	for k := range granted {
		if !needed[k] {
			t.Errorf("%s grants %s, which the command does not need", manifest, k)
		}
	}
}

// grants are the manifest's rules, one key per namespace, group, resource,
// name and verb.
func grants(t testing.TB, manifest string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	granted := map[string]bool{}
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var head struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Namespace string `json:"namespace"`
			} `json:"metadata"`
			Rules []rbacv1.PolicyRule `json:"rules"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatal(err)
		}
		if head.Kind != "ClusterRole" && head.Kind != "Role" {
			continue
		}
		for _, r := range head.Rules {
			if len(r.NonResourceURLs) > 0 || slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") || slices.Contains(r.APIGroups, "*") {
				t.Errorf("a wildcard or non-resource rule: %+v", r)
			}
			names := r.ResourceNames
			if len(names) == 0 {
				names = []string{""}
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						for _, n := range names {
							granted[key(head.Metadata.Namespace, g, res, n, v)] = true
						}
					}
				}
			}
		}
	}
	return granted
}

func key(ns, group, resource, name, verb string) string {
	return strings.Join([]string{"ns=" + ns, "group=" + group, resource, "name=" + name, verb}, " ")
}
