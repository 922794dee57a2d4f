package e2e

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// A model of what survives a power loss, replayed from an strace of
// certagent's file operations (strace -f -y -xx). File data is durable once
// the file is fsynced; a directory entry (create, rename, unlink, symlink,
// mkdir) once its directory is fsynced. What is not durable may or may not be
// on disk after the crash: the model yields every combination of "each
// directory kept some prefix of its pending entry operations" and "data
// written but not fsynced is lost / kept". That is POSIX's promise, stricter
// than ext4's ordered journal (which also orders entries across directories).

// inode is a file or symlink.
type inode struct {
	data, durable []byte // content now, and as last fsynced
	symlink       bool
	dir           bool
}

// dirOp is a change to one directory's entries.
type dirOp struct {
	name string // entry name
	ino  *inode // nil: removed
}

// fsModel is the file system as the process sees it, and what is durable.
type fsModel struct {
	root    string            // only paths under root are modelled
	entries map[string]*inode // absolute path -> inode, as the process sees it
	// durable entries per directory, and the operations since its last fsync
	durEntries map[string]map[string]*inode
	pending    map[string][]dirOp
	fds        map[int]*openFile
}

type openFile struct {
	path string
	ino  *inode
	off  int
}

func newModel(root string) (*fsModel, error) {
	m := &fsModel{root: filepath.Clean(root), entries: map[string]*inode{}, durEntries: map[string]map[string]*inode{}, pending: map[string][]dirOp{}, fds: map[int]*openFile{}}
	err := filepath.Walk(m.root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		ino := &inode{dir: fi.IsDir()}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			t, _ := os.Readlink(p)
			ino.symlink, ino.data = true, []byte(t)
		case fi.Mode().IsRegular():
			ino.data, _ = os.ReadFile(p)
		}
		ino.durable = ino.data
		m.entries[p] = ino
		if p != m.root {
			m.durable(filepath.Dir(p))[filepath.Base(p)] = ino
		}
		return nil
	})
	return m, err
}

func (m *fsModel) durable(dir string) map[string]*inode {
	d, ok := m.durEntries[dir]
	if !ok {
		d = map[string]*inode{}
		m.durEntries[dir] = d
	}
	return d
}

func (m *fsModel) inside(p string) bool {
	return p == m.root || strings.HasPrefix(p, m.root+"/")
}

// entry changes a directory entry (as the process sees it at once; durable later).
func (m *fsModel) entry(p string, ino *inode) {
	if !m.inside(p) || p == m.root {
		return
	}
	if ino == nil {
		delete(m.entries, p)
	} else {
		m.entries[p] = ino
	}
	dir := filepath.Dir(p)
	m.pending[dir] = append(m.pending[dir], dirOp{name: filepath.Base(p), ino: ino})
}

// syncDir makes dir's entry operations durable.
func (m *fsModel) syncDir(dir string) {
	d := m.durable(dir)
	for _, op := range m.pending[dir] {
		if op.ino == nil {
			delete(d, op.name)
		} else {
			d[op.name] = op.ino
		}
	}
	delete(m.pending, dir)
}

// crashState is one possible disk after a power loss: path -> inode content.
type crashState map[string]crashFile

type crashFile struct {
	data    []byte
	symlink bool
	dir     bool
}

// states enumerates the crash states at this point (capped at limit).
func (m *fsModel) states(limit int) []crashState {
	var dirs []string
	for d, ops := range m.pending {
		if len(ops) > 0 {
			dirs = append(dirs, d)
		}
	}
	sort.Strings(dirs)
	var out []crashState
	prefix := make([]int, len(dirs))
	for {
		for _, keepData := range []bool{false, true} {
			out = append(out, m.build(dirs, prefix, keepData))
		}
		// next combination of prefixes
		i := 0
		for ; i < len(dirs); i++ {
			prefix[i]++
			if prefix[i] <= len(m.pending[dirs[i]]) {
				break
			}
			prefix[i] = 0
		}
		if i == len(dirs) || len(out) >= limit {
			return out
		}
	}
}

func (m *fsModel) build(dirs []string, prefix []int, keepData bool) crashState {
	entries := map[string]map[string]*inode{}
	for d, e := range m.durEntries {
		c := make(map[string]*inode, len(e))
		for k, v := range e {
			c[k] = v
		}
		entries[d] = c
	}
	for i, d := range dirs {
		if entries[d] == nil {
			entries[d] = map[string]*inode{}
		}
		for _, op := range m.pending[d][:prefix[i]] {
			if op.ino == nil {
				delete(entries[d], op.name)
			} else {
				entries[d][op.name] = op.ino
			}
		}
	}
	// Walk from the root: an entry exists only if its directory does.
	st := crashState{m.root: {dir: true}}
	var walk func(dir string)
	walk = func(dir string) {
		for name, ino := range entries[dir] {
			p := filepath.Join(dir, name)
			data := ino.durable
			if keepData || ino.symlink {
				data = ino.data // a symlink's target is written with its entry
			}
			st[p] = crashFile{data: data, symlink: ino.symlink, dir: ino.dir}
			if ino.dir {
				walk(p)
			}
		}
	}
	walk(m.root)
	return st
}

// resolve follows symlinks within the state.
func (s crashState) resolve(p string) (crashFile, bool) {
	for range 10 {
		f, ok := s[p]
		if !ok {
			return f, false
		}
		if !f.symlink {
			return f, true
		}
		t := string(f.data)
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(p), t)
		}
		p = t
	}
	return crashFile{}, false
}

// --- strace parsing ---------------------------------------------------------

// traceOp is one syscall: its name, arguments as strings, result.
type traceOp struct {
	name string
	args []string
	ret  string // "= 3<\x2f…>" and the like
}

var (
	lineRE = regexp.MustCompile(`^(\d+)\s+(.*)$`)
	retRE  = regexp.MustCompile(`^.*(\)\s+= )`) // the last ") = "; -xx leaves none inside strings
)

// parseTrace reads an strace -f -y -xx log, joining "unfinished"/"resumed" halves.
func parseTrace(path string) ([]traceOp, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ops []traceOp
	pending := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	for sc.Scan() {
		m := lineRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		pid, rest := m[1], m[2]
		if i := strings.Index(rest, " <unfinished ...>"); i >= 0 {
			pending[pid] = rest[:i]
			continue
		}
		if strings.HasPrefix(rest, "<... ") {
			i := strings.Index(rest, " resumed>")
			if i < 0 {
				continue
			}
			rest = pending[pid] + rest[i+len(" resumed>"):]
			delete(pending, pid)
		}
		if strings.HasPrefix(rest, "+++") || strings.HasPrefix(rest, "---") {
			continue
		}
		// strace pads a resumed call's ") = " with spaces to align it.
		open := strings.IndexByte(rest, '(')
		r := retRE.FindStringSubmatchIndex(rest)
		if open < 0 || r == nil {
			continue
		}
		ops = append(ops, traceOp{name: rest[:open], args: splitArgs(rest[open+1 : r[2]]), ret: rest[r[3]:]})
	}
	return ops, sc.Err()
}

// splitArgs splits a syscall's arguments at top-level commas.
func splitArgs(s string) []string {
	var out []string
	depth, inStr, start := 0, false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inStr:
			i++
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '<' || c == '[' || c == '{':
			depth++
		case c == '>' || c == ']' || c == '}':
			depth--
		case c == ',' && depth == 0:
			out = append(out, strings.TrimSpace(s[start:i]))
			start = i + 1
		}
	}
	return append(out, strings.TrimSpace(s[start:]))
}

// unhex decodes strace -xx text ("\x2f\x74…", with or without quotes).
func unhex(s string) []byte {
	s = strings.Trim(s, `"`)
	var b []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			v, err := strconv.ParseUint(s[i+2:i+4], 16, 8)
			if err == nil {
				b = append(b, byte(v))
				i += 3
				continue
			}
		}
		b = append(b, s[i])
	}
	return b
}

// fdOf parses "3<\x2f…>" into the fd and its path.
func fdOf(s string) (int, string, bool) {
	i := strings.IndexByte(s, '<')
	if i < 0 {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		return n, "", err == nil
	}
	n, err := strconv.Atoi(s[:i])
	return n, string(unhex(strings.TrimSuffix(s[i+1:], ">"))), err == nil
}

// at resolves a path argument relative to a dirfd argument ("AT_FDCWD<…>" or "5<…>").
func at(dirfd, path string) string {
	p := string(unhex(path))
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	dir := ""
	if i := strings.IndexByte(dirfd, '<'); i >= 0 {
		dir = string(unhex(strings.TrimSuffix(dirfd[i+1:], ">")))
	}
	return filepath.Join(dir, p)
}

// apply replays one syscall on the model. A marker hook is told of writes
// to marker (the failpoint log).
func (m *fsModel) apply(op traceOp, marker string, onMarker func(string)) error {
	ok := !strings.HasPrefix(op.ret, "-1")
	if !ok {
		return nil
	}
	switch op.name {
	case "openat":
		if len(op.args) < 3 {
			return fmt.Errorf("openat %v", op.args)
		}
		p := at(op.args[0], op.args[1])
		fd, real, _ := fdOf(op.ret)
		if real != p && m.entries[real] != nil {
			p = real // opened through a symlink: the file it points at
		}
		flags := op.args[2]
		ino, exists := m.entries[p]
		if !exists && strings.Contains(flags, "O_CREAT") {
			ino = &inode{}
			m.entry(p, ino)
		}
		if ino == nil {
			ino = &inode{} // outside the model
		}
		if strings.Contains(flags, "O_TRUNC") {
			ino.data = nil
		}
		m.fds[fd] = &openFile{path: p, ino: ino}
	case "write", "pwrite64":
		fd, p, _ := fdOf(op.args[0])
		if !strings.HasPrefix(p, "/") {
			return nil // a socket, pipe or eventfd
		}
		data := unhex(op.args[1])
		if p == marker {
			onMarker(strings.TrimSpace(string(data)))
			return nil
		}
		of, okFD := m.fds[fd]
		if !okFD || !m.inside(of.path) {
			return nil
		}
		off := of.off
		if op.name == "pwrite64" && len(op.args) > 3 {
			off, _ = strconv.Atoi(op.args[3])
		}
		buf := append([]byte(nil), of.ino.data...)
		for len(buf) < off+len(data) {
			buf = append(buf, 0)
		}
		copy(buf[off:], data)
		of.ino.data = buf
		if op.name == "write" {
			of.off = off + len(data)
		}
	case "ftruncate":
		fd, _, _ := fdOf(op.args[0])
		if of, okFD := m.fds[fd]; okFD {
			n, _ := strconv.Atoi(op.args[1])
			if n < len(of.ino.data) {
				of.ino.data = append([]byte(nil), of.ino.data[:n]...)
			}
		}
	case "fsync", "fdatasync":
		fd, p, _ := fdOf(op.args[0])
		if of, okFD := m.fds[fd]; okFD {
			p = of.path
			if of.ino.dir || m.entries[p] != nil && m.entries[p].dir {
				m.syncDir(p)
			} else {
				of.ino.durable = append([]byte(nil), of.ino.data...)
			}
		} else if ino := m.entries[p]; ino != nil && ino.dir {
			m.syncDir(p)
		}
	case "close":
		// Lines come in the order syscalls finish, so with several threads
		// a close of fd N can be printed after another thread's open that
		// got N again. Forget the fd only if it is still the file closed
		// (strace -y names it as it was when close began).
		fd, p, _ := fdOf(op.args[0])
		if of, okFD := m.fds[fd]; okFD && (of.path == p || m.entries[p] != nil && m.entries[p] == of.ino) {
			delete(m.fds, fd)
		}
	case "renameat", "renameat2", "rename":
		var from, to string
		if op.name == "rename" {
			from, to = at("AT_FDCWD<>", op.args[0]), at("AT_FDCWD<>", op.args[1])
		} else {
			from, to = at(op.args[0], op.args[1]), at(op.args[2], op.args[3])
		}
		ino := m.entries[from]
		if ino == nil {
			return nil
		}
		m.entry(to, ino)
		m.entry(from, nil)
	case "unlinkat":
		m.entry(at(op.args[0], op.args[1]), nil)
	case "symlinkat":
		target := unhex(op.args[0])
		m.entry(at(op.args[1], op.args[2]), &inode{symlink: true, data: target, durable: target})
	case "mkdirat":
		m.entry(at(op.args[0], op.args[1]), &inode{dir: true})
	}
	return nil
}
