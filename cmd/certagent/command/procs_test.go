package command

import (
	"runtime"
	"testing"
)

func TestOneProcessorUnlessTheOperatorSetsGOMAXPROCS(t *testing.T) {
	was := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(was) })
	for _, tc := range []struct {
		env         string
		start, want int
	}{
		{env: "", start: 4, want: 1},
		{env: "", start: 1, want: 1},
		{env: "3", start: 3, want: 3}, // the runtime read GOMAXPROCS=3 at start; left alone
		{env: "8", start: 8, want: 8},
	} {
		runtime.GOMAXPROCS(tc.start)
		got := oneProcessor(func(k string) string {
			if k == "GOMAXPROCS" {
				return tc.env
			}
			return ""
		})
		if got != tc.want || runtime.GOMAXPROCS(0) != tc.want {
			t.Errorf("GOMAXPROCS=%q, runtime at %d: got %d (runtime %d), want %d", tc.env, tc.start, got, runtime.GOMAXPROCS(0), tc.want)
		}
	}
}
