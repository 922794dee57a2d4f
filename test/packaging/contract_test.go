// Package packaging checks what certagent ships for Prometheus and Grafana
// (packaging/prometheus, packaging/grafana): the alert rules fire when they
// should (promtool test rules), the rule files, the scrape example and the
// dashboard are valid, and every one of them uses only the series certagent
// exports (the contract below) the way their types allow. make rules runs it;
// promtool and prometheus come from Debian's prometheus package (make
// rules-deps).
package packaging

import (
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// counterFuncs are the functions a counter belongs in; a gauge in one of them
// is a mistake, and so is a counter outside them.
var counterFuncs = map[string]bool{"rate": true, "irate": true, "increase": true, "resets": true}

// seriesRef is a metric name an expression selects, with the innermost
// function or aggregation whose argument it is ("" at the top level or inside
// plain parentheses).
type seriesRef struct {
	name string
	fn   string
}

var (
	// Aggregation operators: "sum by (x) (...)" has no "(" after "sum".
	aggregations = set("sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
		"bottomk", "topk", "quantile", "limitk", "limit_ratio")
	// Keywords that are not metric names: binary operators, modifiers, numbers.
	keywords = set("and", "or", "unless", "atan2", "bool", "offset", "inf", "nan")
	// Grouping and matching clauses: their parenthesised lists hold label names.
	grouping = set("by", "without", "on", "ignoring", "group_left", "group_right")
)

func set(words ...string) map[string]bool {
	m := make(map[string]bool, len(words))
	for _, w := range words {
		m[w] = true
	}
	return m
}

// seriesRefs tokenizes a PromQL expression, possibly holding Grafana
// variables ($node, ${x}, $__rate_interval), and returns the metric names it
// selects: identifiers outside strings, label matchers and ranges that are not
// followed by "(" (functions), not keywords or aggregations, and not in the
// label lists of by, without, on, ignoring, group_left or group_right. A
// selector by {__name__=...} is refused: it would hide a name from the check.
func seriesRefs(expr string) ([]seriesRef, error) {
	var refs []seriesRef
	var stack []string // the function or aggregation of each open "("
	pending := ""      // a function or aggregation waiting for its "("
	s := expr
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '"' || c == '\'' || c == '`':
			j, err := skipString(s, i)
			if err != nil {
				return nil, err
			}
			i, pending = j, ""
		case c == '{' || c == '[':
			j, err := skipDelimited(s, i)
			if err != nil {
				return nil, err
			}
			if c == '{' && strings.Contains(s[i:j], "__name__") {
				return nil, fmt.Errorf("selector %s at %d names the metric by __name__: write the name before the braces", s[i:j], i)
			}
			i, pending = j, ""
		case c == '#': // a comment, to the end of the line
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '$': // a Grafana variable
			i++
			if i < len(s) && s[i] == '{' {
				for i < len(s) && s[i] != '}' {
					i++
				}
				i++
			} else {
				for i < len(s) && isIdentChar(s[i]) {
					i++
				}
			}
			pending = ""
		case c == '(':
			stack = append(stack, pending)
			i, pending = i+1, ""
		case c == ')':
			if len(stack) == 0 {
				return nil, fmt.Errorf("unbalanced ) at %d", i)
			}
			stack = stack[:len(stack)-1]
			i++
		case isDigit(c) || c == '.' && i+1 < len(s) && isDigit(s[i+1]): // 42, 1e3, 0x1f, 5m, 1h30m
			for i < len(s) && (isIdentChar(s[i]) || s[i] == '.') {
				i++
			}
			pending = ""
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			word, lower := s[i:j], strings.ToLower(s[i:j])
			k := j
			for k < len(s) && (s[k] == ' ' || s[k] == '\t' || s[k] == '\n' || s[k] == '\r') {
				k++
			}
			followedByParen := k < len(s) && s[k] == '('
			switch {
			case grouping[lower]:
				if followedByParen { // group_left and group_right may have no list
					end, err := skipDelimited(s, k)
					if err != nil {
						return nil, err
					}
					j = end
				} // pending stays: "sum by (x) (" still opens sum
			case aggregations[lower]:
				pending = lower
			case keywords[lower]:
				pending = ""
			case followedByParen:
				pending = word
			default:
				fn := ""
				if len(stack) > 0 {
					fn = stack[len(stack)-1]
				}
				refs = append(refs, seriesRef{name: word, fn: fn})
				pending = ""
			}
			i = j
		default: // operators, commas, @
			i++
			pending = ""
		}
	}
	if len(stack) != 0 {
		return nil, fmt.Errorf("%d unclosed (", len(stack))
	}
	return refs, nil
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
func isIdentChar(c byte) bool { return isIdentStart(c) || isDigit(c) }

// skipString returns the index after the string literal starting at s[i].
func skipString(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at %d", i)
}

// skipDelimited returns the index after the {...}, [...] or (...) starting at
// s[i], stepping over strings and nested pairs of the same kind inside it.
func skipDelimited(s string, i int) (int, error) {
	opening := s[i]
	closing := map[byte]byte{'{': '}', '[': ']', '(': ')'}[opening]
	depth := 0
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '"', '\'', '`':
			end, err := skipString(s, j)
			if err != nil {
				return 0, err
			}
			j = end - 1
		case opening:
			depth++
		case closing:
			if depth--; depth == 0 {
				return j + 1, nil
			}
		}
	}
	return 0, fmt.Errorf("unclosed %c at %d", opening, i)
}

// checkSeries reports, for one expression, the names outside the contract and
// the counters and gauges used against their type.
func checkSeries(expr string) []string {
	refs, err := seriesRefs(expr)
	if err != nil {
		return []string{fmt.Sprintf("cannot tokenize: %v", err)}
	}
	if len(refs) == 0 {
		return []string{"selects no series"}
	}
	var problems []string
	for _, r := range refs {
		typ, ok := Contract[r.name]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s is not a series certagent exports (the Contract in contract.go)", r.name))
		case typ == "counter" && !counterFuncs[r.fn]:
			problems = append(problems, fmt.Sprintf("counter %s outside rate, irate, increase or resets", r.name))
		case typ != "counter" && counterFuncs[r.fn]:
			problems = append(problems, fmt.Sprintf("%s %s inside %s, which is for counters", typ, r.name, r.fn))
		}
	}
	return problems
}

// variableQueryExpr returns the PromQL inside a Grafana Prometheus variable
// query: label_values(expr, label) and query_result(expr); "" for forms with
// no expression (label_values(label), label_names(), metrics(re)).
func variableQueryExpr(q string) (string, error) {
	q = strings.TrimSpace(q)
	for _, fn := range []string{"label_values", "query_result"} {
		if !strings.HasPrefix(q, fn+"(") {
			continue
		}
		end, err := skipDelimited(q, len(fn))
		if err != nil || end != len(q) {
			return "", fmt.Errorf("variable query %q: not one %s(...)", q, fn)
		}
		inner := q[len(fn)+1 : end-1]
		if fn == "query_result" {
			return inner, nil
		}
		comma := strings.LastIndex(inner, ",")
		if comma < 0 {
			return "", nil // label_values(label)
		}
		label := strings.TrimSpace(inner[comma+1:])
		if !labelName.MatchString(label) {
			return "", fmt.Errorf("variable query %q: %q is not a label name", q, label)
		}
		return inner[:comma], nil
	}
	return "", nil
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// repo is the path of a file in the certagent repository.
func repo(elem ...string) string {
	return filepath.Join(append([]string{"..", ".."}, elem...)...)
}

func TestSeriesRefs(t *testing.T) {
	for _, tc := range []struct {
		name, expr string
		want       []seriesRef
		wantErr    bool
	}{
		{name: "bare name", expr: "certagent_ready", want: []seriesRef{{"certagent_ready", ""}}},
		{name: "matchers with a variable", expr: `certagent_ready{job="certagent", node=~"$node"} == 0`,
			want: []seriesRef{{"certagent_ready", ""}}},
		{name: "function and range", expr: `increase(certagent_hook_errors_total[1h]) > 0`,
			want: []seriesRef{{"certagent_hook_errors_total", "increase"}}},
		{name: "grafana range variable", expr: `rate(process_cpu_seconds_total{instance=~"$instance"}[$__rate_interval])`,
			want: []seriesRef{{"process_cpu_seconds_total", "rate"}}},
		{name: "aggregation with by before", expr: `3600 * sum by (node, certificate) (rate(a_total[5m])) > 0`,
			want: []seriesRef{{"a_total", "rate"}}},
		{name: "aggregation with by after", expr: `sum(b) without (instance)`, want: []seriesRef{{"b", "sum"}}},
		{name: "set operators and time", expr: `x > 0 and time() - x > 3600`,
			want: []seriesRef{{"x", ""}, {"x", ""}}},
		{name: "matching clauses", expr: `a * on(instance) group_left(version, goversion) b unless ignoring (job) c`,
			want: []seriesRef{{"a", ""}, {"b", ""}, {"c", ""}}},
		{name: "group_left without a list", expr: `a / ignoring(certificate) group_left b`,
			want: []seriesRef{{"a", ""}, {"b", ""}}},
		{name: "parentheses and vector", expr: `(d > 0) - time() or vector(0)`, want: []seriesRef{{"d", ""}}},
		{name: "infinity and numbers", expr: `ttl < +Inf and ttl > 1e3 and ttl != 0x1f and ttl > NaN`,
			want: []seriesRef{{"ttl", ""}, {"ttl", ""}, {"ttl", ""}, {"ttl", ""}}},
		{name: "offset and at", expr: `g offset 1h - g @ 1609746000`, want: []seriesRef{{"g", ""}, {"g", ""}}},
		{name: "strings with braces and commas", expr: `label_replace(h{a="}"}, "dst", "$1,)", "src", "(.*)")`,
			want: []seriesRef{{"h", "label_replace"}}},
		{name: "subquery", expr: `max_over_time(rate(i_total[5m])[1h:1m])`, want: []seriesRef{{"i_total", "rate"}}},
		{name: "function name spaced from its paren", expr: `rate (j_total[5m])`, want: []seriesRef{{"j_total", "rate"}}},
		{name: "recording rule name with colons", expr: `job:k:sum`, want: []seriesRef{{"job:k:sum", ""}}},
		{name: "__name__ is refused", expr: `{__name__="certagent_ready"}`, wantErr: true},
		{name: "unterminated string", expr: `a{b="c}`, wantErr: true},
		{name: "unbalanced parenthesis", expr: `sum(a`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := seriesRefs(tc.expr)
			if (err != nil) != tc.wantErr {
				t.Fatalf("seriesRefs(%q) error %v, want error %v", tc.expr, err, tc.wantErr)
			}
			if !tc.wantErr && !reflect.DeepEqual(got, tc.want) {
				t.Errorf("seriesRefs(%q) = %v, want %v", tc.expr, got, tc.want)
			}
		})
	}
}

func TestCheckSeries(t *testing.T) {
	for _, tc := range []struct {
		name, expr string
		problems   int
	}{
		{"counter in increase", `increase(certagent_csr_denied_total[1h]) > 0`, 0},
		{"gauge compared", `certagent_pending_csr{certificate="server"} == 1`, 0},
		{"unknown series", `certagent_pending_csrs == 1`, 1},
		{"kubelet name with a _total suffix it does not have", `increase(kubelet_server_expiration_renew_errors_total[5m])`, 1},
		{"raw counter", `certagent_renewal_errors_total > 0`, 1},
		{"gauge in rate", `rate(certagent_pending_csr[5m])`, 1},
		{"no series at all", `vector(1)`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkSeries(tc.expr); len(got) != tc.problems {
				t.Errorf("checkSeries(%q) = %q, want %d problem(s)", tc.expr, got, tc.problems)
			}
		})
	}
}

func TestVariableQueryExpr(t *testing.T) {
	for _, tc := range []struct{ q, want string }{
		{`label_values(up{job="certagent"}, node)`, `up{job="certagent"}`},
		{`label_values(up{job="certagent", node=~"$node"}, instance)`, `up{job="certagent", node=~"$node"}`},
		{`label_values(node)`, ``},
		{`query_result(count by (version) (certagent_build_info))`, `count by (version) (certagent_build_info)`},
	} {
		got, err := variableQueryExpr(tc.q)
		if err != nil || got != tc.want {
			t.Errorf("variableQueryExpr(%q) = %q, %v; want %q", tc.q, got, err, tc.want)
		}
	}
}
