package agent

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"k8s.io/client-go/rest"

	"github.com/certagent/certagent/bootstrap"
)

// smapsRelro is /proc/self/smaps of a position-independent build: its
// read-only data holds relocated pages the file does not.
const smapsRelro = `00400000-00b68000 r-xp 00000000 fe:00 10160441                           /usr/bin/certagent
Size:               7584 kB
Rss:                5120 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me dw sd
00b68000-012af000 r--p 00768000 fe:00 10160441                           /usr/bin/certagent
Size:               7452 kB
Anonymous:           312 kB
VmFlags: rd mr mw me dw ac sd
012af000-0132e000 rw-p 00eaf000 fe:00 10160441                           /usr/bin/certagent
Anonymous:           200 kB
`

func TestReadOnlyImage(t *testing.T) {
	const maps = `00400000-00b68000 r-xp 00000000 fe:00 10160441                           /usr/bin/certagent
00b68000-012af000 r--p 00768000 fe:00 10160441                           /usr/bin/certagent
012af000-0132e000 rw-p 00eaf000 fe:00 10160441                           /usr/bin/certagent
0132e000-03374000 rw-p 00000000 00:00 0
7f5352e60000-7f5353000000 rw-p 00000000 00:00 0
7f5399a00000-7f5399a10000 r--p 00000000 fe:00 777                        /etc/ld.so.cache
7f5399b25000-7f5399b27000 r-xp 00000000 00:00 0                          [vdso]
`
	deleted := strings.ReplaceAll(maps, "/usr/bin/certagent", "/usr/bin/certagent (deleted)")
	tests := []struct {
		name string
		maps string
		pc   uint64
		want []addrRange
	}{
		{"code and read-only data of the binary, never its data", maps, 0x400100,
			[]addrRange{{0x400000, 0xb68000}, {0xb68000, 0x12af000}}},
		{"a binary replaced on disk (a package upgrade)", deleted, 0xb00000,
			[]addrRange{{0x400000, 0xb68000}, {0xb68000, 0x12af000}}},
		{"pc in an anonymous mapping: nothing", maps, 0x7f5352e60010, nil},
		{"pc in no mapping: nothing", maps, 0x10, nil},
		{"smaps: a read-only mapping holding private copies (relocations) is kept", smapsRelro, 0x400100,
			[]addrRange{{0x400000, 0xb68000}}},
		{"unparsable lines are skipped", "garbage\n" + maps + "x-y r-xp 0 fe:00 1 /z\n", 0x400100,
			[]addrRange{{0x400000, 0xb68000}, {0xb68000, 0x12af000}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := readOnlyImage([]byte(tc.maps), tc.pc); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("readOnlyImage = %x, want %x", got, tc.want)
			}
		})
	}
}

// written is data the test writes before the trim and reads after it: a trim
// must leave the binary's writable mappings alone.
var written = []int{1, 2, 3}

func TestTrimMemoryUnmapsTheBinaryButKeepsItsData(t *testing.T) {
	written[1] = 42
	before := procSelfStatusKiB(t, "RssFile")
	transports, image, err := trimMemory()
	if err != nil {
		t.Fatal(err)
	}
	after := procSelfStatusKiB(t, "RssFile")
	t.Logf("trimMemory: %d transports, %d MiB of mappings advised; RssFile %d -> %d KiB", transports, image>>20, before, after)
	if image == 0 {
		t.Fatal("no read-only mapping of the test binary found")
	}
	if after >= before {
		t.Errorf("RssFile %d KiB after the trim, %d before: nothing was unmapped", after, before)
	}
	if written[1] != 42 || written[2] != 3 {
		t.Errorf("data changed by the trim: %v", written)
	}
	// The code still runs: it faults back in from the page cache.
	if got := strconv.Itoa(written[1]); got != "42" {
		t.Errorf("strconv.Itoa = %q", got)
	}
}

// TestTrimDoesNotCollect: the trim leaves the garbage to the collector's own
// next run (docs/metrics.md, "Memory"): with automatic collections off, the
// count of completed collections is the same after trimMemory as before.
func TestTrimDoesNotCollect(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, _, err := trimMemory(); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if after.NumGC != before.NumGC || after.NumForcedGC != before.NumForcedGC {
		t.Errorf("trimMemory collected: NumGC %d -> %d, NumForcedGC %d -> %d", before.NumGC, after.NumGC, before.NumForcedGC, after.NumForcedGC)
	}
}

func TestTrimmerRunsOnceAfterABurst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var trims atomic.Int32
		tr := &trimmer{delay: trimDelay, trim: func() { trims.Add(1) }}
		for range 5 { // a bootstrap: steps a second apart
			tr.settled()
			time.Sleep(time.Second)
		}
		if n := trims.Load(); n != 0 {
			t.Fatalf("%d trims during the burst, want none", n)
		}
		time.Sleep(trimDelay)
		synctest.Wait()
		if n := trims.Load(); n != 1 {
			t.Fatalf("%d trims after the burst, want 1", n)
		}
		tr.settled()
		tr.stop()
		time.Sleep(2 * trimDelay)
		synctest.Wait()
		if n := trims.Load(); n != 1 {
			t.Errorf("a stopped trimmer trimmed: %d trims", n)
		}
	})
	var none *trimmer // the agent outside the daemon has none
	none.settled()
	none.stop()
}

func procSelfStatusKiB(t *testing.T, field string) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, field+":") {
			v, err := strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}

// TestDaemonTrimsOnceSettled: a bootstrap (client and serving certificate,
// steps in a burst) is followed by one trim once the daemon has nothing to
// do; a renewal by another; a quiet day by none.
func TestDaemonTrimsOnceSettled(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		var trims atomic.Int32
		f.opts.Trim = func() { trims.Add(1) }
		f.start()
		if f.clientCSRs() != 1 || f.servingCSRs() != 1 {
			t.Fatalf("after start: %d client and %d serving CSRs, want 1 and 1", f.clientCSRs(), f.servingCSRs())
		}
		time.Sleep(trimDelay) // bubble time: the trimmer's timer
		synctest.Wait()
		if n := trims.Load(); n != 1 {
			t.Fatalf("%d trims after the bootstrap, want 1", n)
		}
		f.advance(22*time.Hour + 50*time.Minute) // before the deadline: nothing happens
		time.Sleep(trimDelay)
		synctest.Wait()
		if n := trims.Load(); n != 1 {
			t.Fatalf("%d trims while idle, want still 1", n)
		}
		f.advance(20 * time.Minute) // both renewed
		time.Sleep(trimDelay)
		synctest.Wait()
		if f.clientCSRs() != 2 || f.servingCSRs() != 2 {
			t.Fatalf("%d client and %d serving CSRs, want 2 and 2", f.clientCSRs(), f.servingCSRs())
		}
		if n := trims.Load(); n < 2 || n > 3 {
			t.Fatalf("%d trims after the renewals, want 2 or 3 (one per burst)", n)
		}
	})
}

// TestDaemonTrimsAfterALateEvent: a serving CSR nobody approves gets its
// ServingCSRPending Event 15 s after the burst, with a connection of its
// own; the daemon trims again after it.
func TestDaemonTrimsAfterALateEvent(t *testing.T) {
	sink := &fakeEvents{}
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		var trims atomic.Int32
		f.opts.Trim = func() { trims.Add(1) }
		f.opts.NewEventClient = func(*rest.Config) (bootstrap.EventClient, error) { return sink, nil }
		f.pending.Store(true)
		f.start()
		time.Sleep(trimDelay)
		synctest.Wait()
		if n := trims.Load(); n != 1 {
			t.Fatalf("%d trims while the serving CSR waits, want 1", n)
		}
		f.advanceIn(servingPendingAfter, time.Second)
		if sink.find(ReasonServingCSRPending) == nil {
			t.Fatalf("no %s Event; got %v", ReasonServingCSRPending, sink.reasons())
		}
		time.Sleep(trimDelay)
		synctest.Wait()
		if n := trims.Load(); n != 2 {
			t.Fatalf("%d trims after the late Event, want 2", n)
		}
	})
}

// TestTrimImageUnmapsWhatTheLastTrimFound: after a full trim, code run again
// faults pages of the binary back in; TrimImage unmaps them again, from the
// ranges the full trim found (no /proc read, no collection).
func TestTrimImageUnmapsWhatTheLastTrimFound(t *testing.T) {
	if _, _, err := trimMemory(); err != nil {
		t.Fatal(err)
	}
	// Fault code back in: run what a scrape runs.
	var e expo
	for i := range 200 {
		e.buf.WriteString(strconv.Itoa(i))
	}
	_ = fmt.Sprint(e.buf.Len(), time.Now())
	runtime.GC()
	before := procSelfStatusKiB(t, "RssFile")
	TrimImage()
	after := procSelfStatusKiB(t, "RssFile")
	t.Logf("TrimImage: RssFile %d -> %d KiB", before, after)
	if after >= before {
		t.Errorf("RssFile %d KiB after TrimImage, %d before: nothing was unmapped", after, before)
	}
}

// TestTrimmerUnmapsTheImageAfterIdleWork: idle work (touched) is followed by
// one image trim once it has been quiet for the delay; a stopped trimmer
// schedules none.
func TestTrimmerUnmapsTheImageAfterIdleWork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var trims, images atomic.Int32
		tr := &trimmer{delay: trimDelay, trim: func() { trims.Add(1) }, image: func() { images.Add(1) }}
		for range 3 { // a scrape's requests
			tr.touched()
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(trimDelay)
		synctest.Wait()
		if n := images.Load(); n != 1 || trims.Load() != 0 {
			t.Fatalf("%d image trims and %d full trims after idle work, want 1 and 0", n, trims.Load())
		}
		tr.stop()
		tr.touched()
		time.Sleep(2 * trimDelay)
		synctest.Wait()
		if n := images.Load(); n != 1 {
			t.Errorf("a stopped trimmer trimmed: %d image trims", n)
		}
	})
	var none *trimmer
	none.touched()
}

// TestOnEachGCHearsEveryCollection: the callback runs after each garbage
// collection until it is stopped.
func TestOnEachGCHearsEveryCollection(t *testing.T) {
	var n atomic.Int32
	stop := onEachGC(func() { n.Add(1) })
	for i := int32(1); i <= 3; i++ {
		for deadline := time.Now().Add(5 * time.Second); n.Load() < i; time.Sleep(time.Millisecond) {
			runtime.GC()
			if time.Now().After(deadline) {
				t.Fatalf("%d calls after collections, want %d", n.Load(), i)
			}
		}
	}
	stop()
	got := n.Load()
	for range 3 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if n.Load() > got+1 { // one may already have been under way
		t.Errorf("%d calls after stop, want at most 1", n.Load()-got)
	}
}

// TestDaemonTrimsTheImageAfterAScrape: the daemon unmaps the binary's pages
// again after a scrape of /metrics and after a garbage collection, not
// otherwise while idle.
func TestDaemonTrimsTheImageAfterAScrape(t *testing.T) {
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		var images atomic.Int32
		var gc func() // what the daemon gave to hear collections
		f.opts.Trim = func() {}
		f.opts.TrimImage = func() { images.Add(1) }
		f.opts.OnEachGC = func(fn func()) func() { gc = fn; return func() { gc = nil } }
		f.start()
		time.Sleep(2 * trimDelay)
		synctest.Wait()
		base := images.Load()
		f.advance(time.Hour) // idle, nothing scraped, no collection
		time.Sleep(2 * trimDelay)
		synctest.Wait()
		if n := images.Load(); n != base {
			t.Fatalf("%d image trims while idle and unscraped, want none", n-base)
		}
		scrape(t, f.agent)
		time.Sleep(2 * trimDelay)
		synctest.Wait()
		if n := images.Load(); n != base+1 {
			t.Fatalf("%d image trims after a scrape, want 1", n-base)
		}
		if gc == nil {
			t.Fatal("the daemon does not listen for garbage collections")
		}
		gc()
		time.Sleep(2 * trimDelay)
		synctest.Wait()
		if n := images.Load(); n != base+2 {
			t.Fatalf("%d image trims after a collection, want 1", n-base-1)
		}
	})
}

// TestStaticExecutable: only a 64-bit little-endian ET_EXEC without a
// PT_INTERP program header is static (its read-only mappings cannot hold
// relocated copies, so /proc/self/maps finds them); anything else is read
// from smaps.
func TestStaticExecutable(t *testing.T) {
	elf := func(etype uint16, phdrs ...uint32) []byte {
		const phentsize = 56
		b := make([]byte, 64+phentsize*len(phdrs))
		copy(b, "\x7fELF")
		b[4], b[5] = 2, 1 // ELFCLASS64, little-endian
		binary.LittleEndian.PutUint16(b[16:], etype)
		binary.LittleEndian.PutUint64(b[32:], 64) // e_phoff
		binary.LittleEndian.PutUint16(b[54:], phentsize)
		binary.LittleEndian.PutUint16(b[56:], uint16(len(phdrs)))
		for i, p := range phdrs {
			binary.LittleEndian.PutUint32(b[64+i*phentsize:], p)
		}
		return b
	}
	const ptLoad, ptInterp, etExec, etDyn = 1, 3, 2, 3
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		data []byte
		want bool
	}{
		{"static executable", elf(etExec, ptLoad, ptLoad), true},
		{"dynamically linked executable", elf(etExec, ptInterp, ptLoad), false},
		{"position-independent", elf(etDyn, ptLoad), false},
		{"32-bit", func() []byte { b := elf(etExec, ptLoad); b[4] = 1; return b }(), false},
		{"not ELF", []byte("#!/bin/sh\necho hello\n"), false},
		{"truncated program headers", elf(etExec, ptLoad)[:80], false},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
		if err := os.WriteFile(p, tc.data, 0o755); err != nil {
			t.Fatal(err)
		}
		if got := staticExecutable(p); got != tc.want {
			t.Errorf("%s: staticExecutable = %v, want %v", tc.name, got, tc.want)
		}
	}
	if staticExecutable(filepath.Join(dir, "missing")) {
		t.Error("a missing file is static")
	}
}

// TestDaemonTrimsAfterAHeldBackEvent: a serving certificate approved after
// 20 s has its CertificateIssued held back (15 s here); the daemon does not
// trim in between (the trim would close the connection the Event needs and
// unmap the code that writes it, both back at once) but once it is written.
func TestDaemonTrimsAfterAHeldBackEvent(t *testing.T) {
	sink := &fakeEvents{}
	daemonTest(t, nil, func(t *testing.T, f *daemonFixture) {
		var trims atomic.Int32
		f.opts.Trim = func() { trims.Add(1) }
		f.opts.NewEventClient = func(*rest.Config) (bootstrap.EventClient, error) { return sink, nil }
		f.opts.Rand = func() float64 { return 0.5 }
		f.pending.Store(true)
		f.start()
		f.advanceIn(20*time.Second, time.Second) // the ServingCSRPending Event at 15 s
		time.Sleep(trimDelay)
		synctest.Wait()
		before := trims.Load() // after the client certificate, after the late Event
		f.approveServing()
		for range 5 { // 10 s of the hold, the trim's delay five times over
			f.advanceIn(2*time.Second, time.Second)
			time.Sleep(trimDelay)
			synctest.Wait()
		}
		if n := trims.Load(); n != before {
			t.Fatalf("%d trims while the serving certificate's Event was held back, want none", n-before)
		}
		f.advanceIn(6*time.Second, time.Second)
		if n := len(sink.reasons()); n != 3 {
			t.Fatalf("%d Events 16 s after the serving certificate, want 3: %v", n, sink.reasons())
		}
		time.Sleep(trimDelay)
		synctest.Wait()
		if n := trims.Load(); n != before+1 {
			t.Fatalf("%d trims after the held-back Event was written, want 1", n-before)
		}
	})
}
