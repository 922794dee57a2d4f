package packaging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
)

// The dashboard JSON (the fields these tests look at).
type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Inputs        []struct {
		Name     string `json:"name"`
		Type     string `json:"type"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"` // a string, or {"query": ...} for Prometheus query variables
	Definition string          `json:"definition"`
	Datasource *datasourceRef  `json:"datasource"`
	Current    struct {
		Value any `json:"value"`
	} `json:"current"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    struct {
		H int `json:"h"`
		W int `json:"w"`
		X int `json:"x"`
		Y int `json:"y"`
	} `json:"gridPos"`
	Targets []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's
}

const (
	dashboardFile = "certagent-dashboard.json"
	// dsVariable is how panels and queries name the data source: the
	// datasource variable, which the import sets from ${DS_PROMETHEUS}.
	dsVariable = "${datasource}"
)

func readDashboard(t *testing.T) (dashboard, []byte) {
	t.Helper()
	data, err := os.ReadFile(repo("packaging", "grafana", dashboardFile))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d, data
}

// allPanels flattens rows' panels into the list.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// variableQuery is a query variable's query, whichever form it is stored in.
func variableQuery(v variable) (string, error) {
	var s string
	if err := json.Unmarshal(v.Query, &s); err == nil {
		return s, nil
	}
	var o struct {
		Query string `json:"query"`
	}
	if err := json.Unmarshal(v.Query, &o); err != nil {
		return "", fmt.Errorf("variable %s: query is neither a string nor {\"query\": ...}: %v", v.Name, err)
	}
	return o.Query, nil
}

// dashboardExprs are the dashboard's PromQL expressions, named for messages:
// every panel target's and every query variable's.
func dashboardExprs(t *testing.T, d dashboard) map[string]string {
	t.Helper()
	exprs := map[string]string{}
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			exprs[fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID)] = tg.Expr
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, err := variableQuery(v)
		if err != nil {
			t.Error(err)
			continue
		}
		expr, err := variableQueryExpr(q)
		if err != nil {
			t.Error(err)
			continue
		}
		exprs["variable "+v.Name] = expr
	}
	return exprs
}

func TestDashboard(t *testing.T) {
	d, data := readDashboard(t)
	if d.UID != "certagent" || d.Title != "certagent" {
		t.Errorf("uid %q, title %q; want certagent, certagent (links and provisioning use the uid)", d.UID, d.Title)
	}
	if d.SchemaVersion != 39 {
		t.Errorf("schemaVersion %d, want 39", d.SchemaVersion)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].Type != "datasource" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs %+v, want one Prometheus datasource input DS_PROMETHEUS", d.Inputs)
	}

	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if ds := vars["datasource"]; ds.Type != "datasource" || string(ds.Query) != `"prometheus"` || ds.Current.Value != "${DS_PROMETHEUS}" {
		t.Errorf("templating: want a datasource variable of Prometheus data sources that the import sets from ${DS_PROMETHEUS}, have %+v", ds)
	}
	for _, name := range []string{"node", "instance"} {
		v, ok := vars[name]
		if !ok {
			t.Errorf("templating: no %s variable", name)
			continue
		}
		q, err := variableQuery(v)
		if err != nil {
			t.Error(err)
		}
		if v.Type != "query" || v.Datasource == nil || v.Datasource.UID != dsVariable || !strings.HasPrefix(q, "label_values(") || !strings.HasSuffix(q, ", "+name+")") {
			t.Errorf("templating: %s should be label_values(..., %s) on %s, is %+v (query %q)", name, name, dsVariable, v, q)
		}
	}
	if !bytes.Contains(data, []byte(`node=~\"$node\"`)) {
		t.Error("the instance variable and the panels should filter by node=~\"$node\"")
	}

	ids := map[int]string{}
	for _, p := range allPanels(d.Panels) {
		if prev, dup := ids[p.ID]; dup || p.ID <= 0 {
			t.Errorf("panel %q: id %d is not a unique positive number (also %q)", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %d %q: gridPos %+v is not within the 24 columns", p.ID, p.Title, p.GridPos)
		}
		if p.Type == "row" {
			if len(p.Targets) != 0 {
				t.Errorf("row %d %q has targets", p.ID, p.Title)
			}
			continue
		}
		switch p.Type {
		case "stat", "timeseries", "table":
		default:
			t.Errorf("panel %d %q: type %q is not one of Grafana's core stat, timeseries, table", p.ID, p.Title, p.Type)
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != dsVariable {
			t.Errorf("panel %d %q: datasource %+v, want {prometheus %s}", p.ID, p.Title, p.Datasource, dsVariable)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %d %q has no target", p.ID, p.Title)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %d %q: refId %q missing or repeated", p.ID, p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
			if tg.Datasource != nil && tg.Datasource.UID != dsVariable {
				t.Errorf("panel %d %q target %s: datasource %+v, want %s", p.ID, p.Title, tg.RefID, tg.Datasource, dsVariable)
			}
			for _, v := range []string{`job="certagent"`, `node=~"$node"`, `instance=~"$instance"`} {
				if !strings.Contains(tg.Expr, v) {
					t.Errorf("panel %d %q target %s: %q does not select %s", p.ID, p.Title, tg.RefID, tg.Expr, v)
				}
			}
		}
	}
}

// TestDashboardUsesOnlyContractSeries checks every query of the dashboard
// (panels and variables) selects only series of the contract, counters in
// rate or increase and gauges outside them.
func TestDashboardUsesOnlyContractSeries(t *testing.T) {
	d, _ := readDashboard(t)
	exprs := dashboardExprs(t, d)
	if len(exprs) == 0 {
		t.Fatal("no queries found")
	}
	used := map[string]bool{}
	for where, expr := range exprs {
		for _, p := range checkSeries(expr) {
			t.Errorf("%s: %s: %s", where, expr, p)
		}
		refs, _ := seriesRefs(expr)
		for _, r := range refs {
			used[r.name] = true
		}
	}
	// What the dashboard is for: each of these has a panel.
	for _, name := range []string{
		"certagent_certificate_expiry_seconds", "certagent_certificate_renewal_deadline_timestamp_seconds",
		"certagent_pending_csr", "certagent_renewal_errors_total", "certagent_csr_denied_total", "certagent_ready",
		"certagent_hook_errors_total", "kubelet_certificate_manager_client_ttl_seconds",
		"kubelet_certificate_manager_server_ttl_seconds", "process_resident_memory_bytes", "process_cpu_seconds_total",
		"go_goroutines",
	} {
		if !used[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
}
