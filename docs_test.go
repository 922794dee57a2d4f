package certagent_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// citedTest is a test, benchmark or fuzz target's name as the docs cite it
// (a subtest's path after "/" is not part of it).
var citedTest = regexp.MustCompile(`\b(?:Test|Benchmark|Fuzz)[A-Z][A-Za-z0-9_]*`)

// TestDocsCiteTestsThatExist: every test the README and docs/*.md cite as
// proof is a Test, Benchmark or Fuzz function of some _test.go file in the
// repository (any module: the unit, e2e, fleet, node and packaging suites),
// so that a renamed or deleted test does not leave a claim proven by nothing.
func TestDocsCiteTestsThatExist(t *testing.T) {
	docs, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	docs = append([]string{"README.md"}, docs...)
	defined := definedTests(t, ".")
	if len(defined) < 100 {
		t.Fatalf("found only %d test functions in the repository: the walk is broken", len(defined))
	}
	cited := 0
	for _, doc := range docs {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			for _, name := range citedTest.FindAllString(line, -1) {
				cited++
				if !defined[name] {
					t.Errorf("%s:%d cites %s, which no _test.go file in the repository defines", doc, i+1, name)
				}
			}
		}
	}
	if cited < 50 {
		t.Fatalf("found only %d test names cited in %v: the pattern is broken", cited, docs)
	}
}

// definedTests is the set of top-level Test, Benchmark and Fuzz functions
// in every _test.go file under root, whatever its build tags.
func definedTests(t *testing.T, root string) map[string]bool {
	t.Helper()
	defined := map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || slices.Contains([]string{"bin", "dist", "testdata"}, d.Name())) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			if fn, ok := decl.(*ast.FuncDecl); ok && fn.Recv == nil && citedTest.FindString(fn.Name.Name) == fn.Name.Name {
				defined[fn.Name.Name] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return defined
}

// mdLink is a Markdown link's target: a path, an anchor, or both.
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocsLinksResolve: every relative link in README.md and docs/*.md
// names a file or directory of the repository, and a link to a heading of a
// Markdown file (file.md#heading, or #heading) names a heading it has, so
// that moving text between documents leaves no link pointing nowhere.
func TestDocsLinksResolve(t *testing.T) {
	docs, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	docs = append([]string{"README.md"}, docs...)
	checked := 0
	for _, doc := range docs {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(data), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			path, anchor, _ := strings.Cut(target, "#")
			file := doc
			if path != "" {
				file = filepath.Join(filepath.Dir(doc), path)
				if _, err := os.Stat(file); err != nil {
					t.Errorf("%s links to %s, which does not exist", doc, target)
					continue
				}
			}
			checked++
			if anchor != "" && strings.HasSuffix(file, ".md") && !hasHeading(t, file, anchor) {
				t.Errorf("%s links to %s: %s has no such heading", doc, target, file)
			}
		}
	}
	if checked < 30 {
		t.Fatalf("checked only %d links: the pattern is broken", checked)
	}
}

// hasHeading reports whether the Markdown file has a heading whose GitHub
// anchor is anchor (lower case, punctuation dropped, spaces as hyphens).
func hasHeading(t *testing.T, file, anchor string) bool {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		title, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " ")
		if !ok || !strings.HasPrefix(line, "#") {
			continue
		}
		var b strings.Builder
		for _, r := range strings.ToLower(title) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
				b.WriteRune(r)
			}
		}
		if b.String() == anchor {
			return true
		}
	}
	return false
}
