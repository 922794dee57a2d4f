package kubelettest

import (
	"os"
	"regexp"
	"strings"
	"time"
)

// klogLine is one line of a klog file and the time in its header.
type klogLine struct {
	at   time.Time
	text string
}

// klogLines are the lines of path that match and carry klog's header
// ("I1123 04:44:48.123456", in local time; the year is taken to be this one).
func klogLines(path string, match func(string) bool) []klogLine {
	data, _ := os.ReadFile(path)
	var out []klogLine
	for _, l := range strings.Split(string(data), "\n") {
		if len(l) < 21 || !match(l) {
			continue
		}
		at, err := time.ParseInLocation("0102 15:04:05.000000", l[1:21], time.Local)
		if err != nil {
			continue
		}
		out = append(out, klogLine{at: at.AddDate(time.Now().Year(), 0, 0), text: l})
	}
	return out
}

// KlogTimes are the times of the klog lines of path that contain marker, in
// any case.
func KlogTimes(path, marker string) []time.Time {
	marker = strings.ToLower(marker)
	var out []time.Time
	for _, l := range klogLines(path, func(l string) bool { return strings.Contains(strings.ToLower(l), marker) }) {
		out = append(out, l.at)
	}
	return out
}

// KlogLinesSince are the klog lines of path at or after since that match re.
func KlogLinesSince(path string, re *regexp.Regexp, since time.Time) []string {
	var out []string
	for _, l := range klogLines(path, re.MatchString) {
		if !l.at.Before(since) {
			out = append(out, l.text)
		}
	}
	return out
}
