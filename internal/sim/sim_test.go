//go:build failpoints

package sim

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"testing/cryptotest"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/certagent/certagent/rotate"
)

var (
	seeds     = flag.Int("sim.seeds", 50, "number of seeds to simulate")
	first     = flag.Uint64("sim.first", 1, "first seed")
	only      = flag.Uint64("sim.seed", 0, "simulate only this seed (a reproduction)")
	years     = flag.Float64("sim.years", 1, "simulated time per seed, in years")
	shard     = flag.String("sim.shard", "0/1", "i/n: simulate every n-th seed starting at the i-th (to spread seeds over processes)")
	report    = flag.String("sim.report", "", "append a one-line summary of the run to this file")
	debug     = flag.Bool("sim.debug", false, "print the agent's log (with -sim.seed)")
	rotateAll = flag.Bool("sim.rotate", false, "give every seed a CA rotation (otherwise some seeds have one)")
)

// TestSim runs one node through simulated time for each seed and checks,
// after every event: kubelet.conf absent or loadable, every -current.pem a
// complete pair, the client certificate never expired while the node could
// renew for 10 minutes, never a second pending CSR for the same names,
// READY only when the API server accepts kubelet.conf (or cannot be
// reached), hooks only once the step is on disk, no goroutine left behind;
// no stranding the world does not explain, the bootstrap kubeconfig deleted
// only once the API server accepts kubelet.conf and a request with its
// certificate succeeded, every rescue over within 2 hours of the node being
// able to work (strand.go); for nodes that join by TPM attestation, an
// enrolled node without a credential has one again within the same 2 hours
// once it and the service can work, a refusal leaves kubelet.conf and the
// client certificate alone, a retry sends the same CSR for the same key and
// one attestation creates one CSR (attestcheck.go); and at the end, CSR
// creations per day bounded. The summary counts strandings, rescues and
// their recovery times, and the attestation figures.
func TestSim(t *testing.T) {
	base := "/dev/shm" // fsync costs nothing on tmpfs; the real code path runs anyway
	if fi, err := os.Stat(base); err != nil || !fi.IsDir() {
		base = t.TempDir()
	}
	var list []uint64
	if *only != 0 {
		list = []uint64{*only}
	} else {
		var i, n int
		if _, err := fmt.Sscanf(*shard, "%d/%d", &i, &n); err != nil || n < 1 || i < 0 || i >= n {
			t.Fatalf("-sim.shard %q: want i/n with 0 <= i < n", *shard)
		}
		for k := 0; k < *seeds; k++ {
			if k%n == i {
				list = append(list, *first+uint64(k))
			}
		}
	}
	if longest := rotate.PermanentBackoff.Longest(); longest+10*time.Minute > rescueBound {
		t.Fatalf("the agent may rightly wait %s after a failure that needs a person (rotate.PermanentBackoff), too close to the %s a rescue is given (rescueBound in strand.go): revisit the bound", longest, rescueBound)
	}
	RotateAll = *rotateAll
	span := time.Duration(*years * float64(365*24*time.Hour))
	start := time.Now()
	var total Stats
	var failed []string
	for _, seed := range list {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			cryptotest.SetGlobalRandom(t, seed) // keys, CSRs and serials repeat for a seed
			synctest.Test(t, func(t *testing.T) {
				var log *zap.Logger
				if *debug {
					log = zaptest.NewLogger(t)
				}
				failure, w := Run(seed, span, base, log)
				if w != nil {
					total.ClientCSRs += w.stats.ClientCSRs
					total.ServingCSRs += w.stats.ServingCSRs
					total.MaxPerDay = max(total.MaxPerDay, w.stats.MaxPerDay)
					total.Restarts += w.stats.Restarts
					total.Kills += w.stats.Kills
					total.Suspends += w.stats.Suspends
					total.Outages += w.stats.Outages
					total.Events += w.stats.Events
					total.add(w.stats)
					if testing.Verbose() {
						t.Log(w.summary(), w.kinds)
					}
				}
				if failure != "" {
					failed = append(failed, fmt.Sprint(seed))
					trace := ""
					if w != nil {
						trace = "\nlast events:\n" + w.lastEvents(25) + "\n" + w.summary()
					}
					t.Fatalf("%s\nreproduce: make sim SEED=%d%s", failure, seed, trace)
				}
			})
		})
	}
	took := time.Since(start)
	nodeYears := float64(len(list)) * *years
	line := fmt.Sprintf("%d seeds x %.2g simulated years in %s: %.1f client and %.1f serving CSRs per node-year, at most %d CSRs of one kind in a day; %d restarts (%d killed at failpoints), %d suspends, %d outages, %d events; %s; %s; %s; %s; %d failed %s",
		len(list), *years, took.Round(time.Millisecond), float64(total.ClientCSRs)/nodeYears, float64(total.ServingCSRs)/nodeYears,
		total.MaxPerDay, total.Restarts, total.Kills, total.Suspends, total.Outages, total.Events, total.strandings(), total.Attest.String(float64(total.Attest.Nodes)**years), total.Rotation, total.Bad, len(failed), strings.Join(failed, " "))
	t.Log(line)
	if *report != "" {
		f, err := os.OpenFile(*report, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, line)
			f.Close()
		}
	}
}
