package server

import (
	"os"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// TestPermissionsAreWhatRBACGrants: the permissions the service checks at
// start are exactly the rules packaging/cluster/20-rbac.yaml grants its
// service account: a rule the service does not need fails this test, and so
// does a need the manifest does not grant.
func TestPermissionsAreWhatRBACGrants(t *testing.T) {
	data, err := os.ReadFile("../../packaging/cluster/20-rbac.yaml")
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
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						names := r.ResourceNames
						if len(names) == 0 {
							names = []string{""}
						}
						for _, n := range names {
							granted[key(head.Metadata.Namespace, g, res, n, v)] = true
						}
					}
				}
			}
		}
	}
	needed := map[string]bool{}
	for _, p := range permissions {
		a := p.attrs
		res := a.Resource
		if a.Subresource != "" {
			res += "/" + a.Subresource
		}
		needed[key(a.Namespace, a.Group, res, a.Name, a.Verb)] = true
	}
	for k := range needed {
		if !granted[k] {
			t.Errorf("the service needs %s; 20-rbac.yaml does not grant it", k)
		}
	}
	for k := range granted {
		if !needed[k] {
			t.Errorf("20-rbac.yaml grants %s, which the service does not need", k)
		}
	}
}

func key(ns, group, resource, name, verb string) string {
	return strings.Join([]string{"ns=" + ns, "group=" + group, resource, "name=" + name, verb}, " ")
}
