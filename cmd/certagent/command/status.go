package command

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/certagent/certagent/agent/observe"
)

func statusCommand(args []string, stdout, stderr io.Writer) int {
	c := newCommonFlags("status", stderr)
	output := c.fs.String("o", "text", "output format: text or json")
	cfg, code := c.start(args, false)
	if code != 0 {
		return code
	}
	now := time.Now()
	st := observe.ReadStatus(cfg, now)
	switch *output {
	case "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			fmt.Fprintf(stderr, "certagent: %v\n", err)
			return 1
		}
	case "text":
		st.WriteText(stdout, now)
	default:
		fmt.Fprintf(stderr, "certagent: unknown output format %q (text or json)\n", *output)
		return 2
	}
	return 0
}
