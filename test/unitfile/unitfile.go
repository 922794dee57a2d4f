// Package unitfile reads what a test needs from the systemd unit certagent
// ships, so that processes a test starts by hand run as the unit starts them.
package unitfile

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// Shipped is the unit the packages install, relative to test/'s packages.
const Shipped = "../../systemd/certagent.service"

// Environment is the environment the unit at path gives its service: the
// assignments of its [Service] section's Environment= lines, in order, as
// systemd reads them (space-separated, an assignment in double quotes may
// hold spaces, an empty Environment= clears what came before).
func Environment(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading the unit's environment: %w", err)
	}
	defer f.Close()
	var env []string
	section := ""
	s := bufio.NewScanner(f)
	for line := 1; s.Scan(); line++ {
		text := strings.TrimSpace(s.Text())
		switch {
		case text == "" || text[0] == '#' || text[0] == ';':
			continue
		case text[0] == '[':
			section = text
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		if section != "[Service]" || !ok || strings.TrimSpace(key) != "Environment" {
			continue
		}
		words, err := assignments(strings.TrimSpace(value))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		if len(words) == 0 {
			env = nil
			continue
		}
		env = append(env, words...)
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return env, nil
}

// assignments splits an Environment= value into its VAR=value words.
func assignments(value string) ([]string, error) {
	var words []string
	for value != "" {
		var word string
		if value[0] == '"' {
			end := strings.IndexByte(value[1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("unterminated quote in Environment=%s", value)
			}
			word, value = value[1:1+end], value[2+end:]
		} else if i := strings.IndexAny(value, " \t"); i >= 0 {
			word, value = value[:i], value[i:]
		} else {
			word, value = value, ""
		}
		value = strings.TrimLeft(value, " \t")
		if !strings.Contains(word, "=") || strings.HasPrefix(word, "=") {
			return nil, fmt.Errorf("%q is not an assignment VAR=value", word)
		}
		words = append(words, word)
	}
	return words, nil
}
