package command

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/certagent/certagent/agent/config"
)

// effective lists every setting of l's configuration, in docs/config.md's
// order, with where its value came from: the default, the last file that
// set it (even to the default value), the flag, or the host name.
func (l loaded) effective() []config.Entry {
	origin := map[string]string{}
	for _, f := range l.files {
		for _, k := range f.Keys {
			origin[k] = f.Path
		}
	}
	for _, o := range l.flags {
		origin[o.key] = "flag --" + o.flag
	}
	if l.hostName {
		origin["nodeName"] = config.OriginHostName
	}
	return config.Effective(l.cfg, origin)
}

// configCommand is `certagent config`: the effective configuration with the
// origin of every value, or with --check whether run would accept it. It
// reads the config files and nothing else: no logger, no API server, no lock.
func configCommand(args []string, stdout, stderr io.Writer) int {
	c := newCommonFlags("config", stderr)
	rf := c.addRunFlags()
	output := c.fs.String("o", "text", "output format: text or json")
	check := c.fs.Bool("check", false, "validate the configuration as run does before it starts, print the files read, start nothing")
	if err := c.parse(args); err != nil {
		return 2
	}
	if *output != "text" && *output != "json" {
		fmt.Fprintf(stderr, "certagent: unknown output format %q (text or json)\n", *output)
		return 2
	}
	if *check {
		return checkConfig(c, *rf.logFormat, stdout, stderr)
	}
	l, err := c.loadSources()
	if err != nil {
		fmt.Fprintf(stderr, "certagent: %v\n", err)
		return 2
	}
	entries := l.effective()
	if *output == "json" {
		err = writeConfigJSON(stdout, entries)
	} else {
		writeConfigText(stdout, entries)
	}
	if err != nil {
		fmt.Fprintf(stderr, "certagent: writing the configuration: %v\n", err)
		return 1
	}
	// Shown anyway (it helps to find the culprit), but run would refuse it.
	if err := l.cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "certagent: invalid configuration: %v\n", err)
		return 2
	}
	return 0
}

// checkConfig is `certagent config --check`: the checks run makes before it
// starts, with the same messages.
func checkConfig(c *commonFlags, logFormat string, stdout, stderr io.Writer) int {
	l, err := c.loadValid()
	if err == nil {
		err = checkLogFormat(logFormat)
	}
	if err != nil {
		fmt.Fprintf(stderr, "certagent: %v\n", err)
		return 2
	}
	if len(l.files) == 0 {
		fmt.Fprintf(stdout, "configuration OK; no file read (%s is absent): defaults and flags only\n", c.config)
		return 0
	}
	fmt.Fprintln(stdout, "configuration OK; files read:")
	for _, f := range l.files {
		fmt.Fprintf(stdout, "  %s\n", f.Path)
	}
	return 0
}

// writeConfigText prints one "key: value  # origin" line per setting, the
// origins aligned (past the longest line up to 60 characters).
func writeConfigText(w io.Writer, entries []config.Entry) {
	lines := make([]string, len(entries))
	width := 0
	for i, e := range entries {
		lines[i] = e.Key + ": " + textValue(e.Value)
		if n := len(lines[i]); n <= 60 && n > width {
			width = n
		}
	}
	for i, e := range entries {
		fmt.Fprintf(w, "%-*s  # %s\n", width, lines[i], e.Origin)
	}
}

// textValue writes a string bare unless that would misread (empty, spaces,
// a comment sign, quotes, or something that reads as a number, bool or
// list), and anything else as JSON, which YAML reads too.
func textValue(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) != nil {
		return string(v)
	}
	if s == "" || strings.ContainsAny(s, " \t#\"'") || json.Valid([]byte(s)) {
		return string(v)
	}
	return s
}

// writeConfigJSON prints {"key": {"value": ..., "origin": "..."}, ...} with
// the keys in docs/config.md's order.
func writeConfigJSON(w io.Writer, entries []config.Entry) error {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range entries {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(e.Key)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", e.Key, err)
		}
		v, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", e.Key, err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", "  "); err != nil {
		return fmt.Errorf("indenting: %w", err)
	}
	out.WriteByte('\n')
	_, err := w.Write(out.Bytes())
	return err
}
