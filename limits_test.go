package certagent_test

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The limits of product code (issue 24): the non-test Go files of this
// module's packages that the shipped binaries link (go list -deps ./cmd/...).
const (
	maxPackageShare = 0.30 // of the product's lines
	maxFileLines    = 300
	maxFuncLines    = 60
)

// productPackage is a package of this module linked into a shipped binary,
// with the files the default build compiles.
type productPackage struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	CgoFiles   []string
	Module     *struct{ Path string }
}

// productPackages lists them with go list.
func productPackages(t *testing.T) []productPackage {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-json=ImportPath,Dir,GoFiles,CgoFiles,Module", "./cmd/...").Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/...: %v", err)
	}
	self, err := exec.Command("go", "list", "-m").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	module := strings.TrimSpace(string(self))
	var pkgs []productPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p productPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.Module != nil && p.Module.Path == module {
			pkgs = append(pkgs, p)
		}
	}
	return pkgs
}

// TestProductCodeWithinLimits: no package of the product holds more than
// maxPackageShare of its lines, no file more than maxFileLines lines, no
// function more than maxFuncLines (from func to its closing brace).
func TestProductCodeWithinLimits(t *testing.T) {
	pkgs := productPackages(t)
	if len(pkgs) < 5 {
		t.Fatalf("found %d product packages: go list found too few", len(pkgs))
	}
	report, problems, err := checkLimits(pkgs)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + report)
	for _, p := range problems {
		t.Error(p)
	}
}

// checkLimits measures pkgs and returns a report (lines per package and
// its share) and what breaks a limit.
func checkLimits(pkgs []productPackage) (report string, problems []string, err error) {
	fset := token.NewFileSet()
	lines := map[string]int{}
	total := 0
	for _, p := range pkgs {
		for _, name := range append(append([]string{}, p.GoFiles...), p.CgoFiles...) {
			path := filepath.Join(p.Dir, name)
			src, err := os.ReadFile(path)
			if err != nil {
				return "", nil, err
			}
			n := strings.Count(string(src), "\n")
			if len(src) > 0 && src[len(src)-1] != '\n' {
				n++
			}
			lines[p.ImportPath] += n
			total += n
			if n > maxFileLines {
				problems = append(problems, fmt.Sprintf("%s: %d lines, more than %d", path, n, maxFileLines))
			}
			f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
			if err != nil {
				return "", nil, err
			}
			for _, d := range f.Decls {
				fn, ok := d.(*ast.FuncDecl)
				if !ok || fn.Body == nil {
					continue
				}
				if n := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1; n > maxFuncLines {
					problems = append(problems, fmt.Sprintf("%s: %s has %d lines, more than %d", fset.Position(fn.Pos()), funcName(fn), n, maxFuncLines))
				}
			}
		}
	}
	names := make([]string, 0, len(lines))
	for name := range lines {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return lines[names[i]] > lines[names[j]] })
	var b strings.Builder
	fmt.Fprintf(&b, "product: %d lines in %d packages\n", total, len(names))
	for _, name := range names {
		share := float64(lines[name]) / float64(total)
		fmt.Fprintf(&b, "%6d %5.1f %%  %s\n", lines[name], 100*share, name)
		if share > maxPackageShare {
			problems = append(problems, fmt.Sprintf("package %s: %d of the product's %d lines (%.1f %%), more than %.0f %%",
				name, lines[name], total, 100*share, 100*maxPackageShare))
		}
	}
	return b.String(), problems, nil
}

func funcName(fn *ast.FuncDecl) string {
	if fn.Recv == nil || len(fn.Recv.List) == 0 {
		return fn.Name.Name
	}
	t := fn.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	if ix, ok := t.(*ast.IndexExpr); ok {
		t = ix.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + fn.Name.Name
	}
	return fn.Name.Name
}

// TestCheckLimitsCatchesWhatBreaksThem: the check finds a file over
// maxFileLines, a function over maxFuncLines and a package over its share,
// and passes code within them.
func TestCheckLimitsCatchesWhatBreaksThem(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, body string) string {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return name
	}
	fn := func(name string, lines int) string { // a function of exactly lines lines
		return "func " + name + "() {\n" + strings.Repeat("\t_ = 0\n", lines-2) + "}\n"
	}
	small := write("small.go", "package p\n\n"+fn("ok", maxFuncLines))
	longFunc := write("longfunc.go", "package p\n\n"+fn("tooLong", maxFuncLines+1))
	longFile := write("longfile.go", "package p\n\n"+strings.Repeat("var _ = 0\n", maxFileLines-1))
	pkg := func(path string, files ...string) productPackage {
		return productPackage{ImportPath: path, Dir: dir, GoFiles: files}
	}
	filler := make([]productPackage, 8)
	for i := range filler {
		filler[i] = pkg(fmt.Sprintf("q%d", i), small, small) // 8 x 124 lines
	}
	for _, tc := range []struct {
		name string
		pkgs []productPackage
		want []string // substrings of the problems, in order
	}{
		{"within the limits", append([]productPackage{pkg("p", small)}, filler...), nil},
		{"a function over the limit", append([]productPackage{pkg("p", longFunc)}, filler...),
			[]string{fmt.Sprintf("tooLong has %d lines, more than %d", maxFuncLines+1, maxFuncLines)}},
		{"a file over the limit", append([]productPackage{pkg("p", longFile)}, filler...),
			[]string{fmt.Sprintf("longfile.go: %d lines, more than %d", maxFileLines+1, maxFileLines)}},
		{"a package over its share", []productPackage{pkg("p", small, small, small), pkg("q", small), pkg("r", small), pkg("s", small), pkg("u", small)},
			[]string{"package p: 186 of the product's 434 lines (42.9 %), more than 30 %"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, problems, err := checkLimits(tc.pkgs)
			if err != nil {
				t.Fatal(err)
			}
			if len(problems) != len(tc.want) {
				t.Fatalf("problems %q, want %d like %q", problems, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(problems[i], w) {
					t.Errorf("problem %q, want %q", problems[i], w)
				}
			}
		})
	}
}
