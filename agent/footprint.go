package agent

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/certagent/certagent/bootstrap"
)

// A daemon on every node pays its memory once per node, and an idle
// certagent needs little of what its start-up and its last bootstrap or
// renewal touched: client-go, TLS, JSON, x509, the CSR code. Three things stay
// with the process after such a burst (docs/metrics.md, "Memory"):
//
//   - the connections to the API server, which client-go keeps open and
//     pinged for 90 s, with their buffers and goroutines;
//   - heap pages the garbage collector has freed but the runtime keeps for
//     later (it returns them to the OS only slowly, over minutes);
//   - the pages of the binary's code and read-only data that the burst
//     mapped (the kernel maps up to 64 KiB around each page a fault reads):
//     about 10 MiB of certagent's 16 MB after start-up alone, most of them
//     not run again until the next renewal.
//
// So once the daemon settles (a step done and the next one a minute or more
// away, a CSR posted and waiting for approval, an Event written) it trims: it
// closes the idle connections and unmaps the binary's read-only pages
// (madvise MADV_DONTNEED); the free heap is returned after the collector's
// next run (see trimMemory). After idle work (a scrape, a collection) it
// unmaps the binary's pages again (TrimImage). Those pages stay in the
// page cache, clean: what the idle daemon runs again (timers, the garbage
// collector, /metrics) faults back in from there, the rest is left to the
// kernel to reclaim like any cached file. Nothing else changes: the next
// renewal dials again and faults the code it needs back in (minor faults,
// or reads from disk if the kernel reclaimed the pages meanwhile).
//
// Writable mappings are never touched: MADV_DONTNEED would throw away the
// process's writes to its data and heap. Nor is a read-only mapping that holds
// private copies of pages (Anonymous > 0 in smaps): a position-independent or
// dynamically linked build has its relocations written into read-only data
// (RELRO) that the file does not hold.

// trimDelay is how long the daemon must stay settled before it trims: one
// trim after a bootstrap that posts the client CSR, stores it and posts the
// serving CSR within a second.
const trimDelay = 2 * time.Second

// closeSettle is how long the connections closed by a trim get to finish.
const closeSettle = 200 * time.Millisecond

// trimmer runs trim once the calls to settled have stopped for delay, and
// image (if set) once the calls to touched have.
type trimmer struct {
	delay time.Duration
	trim  func()
	image func()
	// held, if set, says the burst is not over (an Event held back): the
	// trim waits for the next call to settled.
	held func() bool

	mu         sync.Mutex
	timer      *time.Timer
	imageTimer *time.Timer
	stopped    bool
}

// settled says the daemon has just finished a burst of work. The trim runs on
// its own goroutine after delay (real time: it changes no behaviour, so it
// needs no injected clock).
func (t *trimmer) settled() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.timer == nil {
		t.timer = time.AfterFunc(t.delay, t.fire)
		return
	}
	t.timer.Reset(t.delay)
}

func (t *trimmer) fire() {
	if t.held != nil && t.held() {
		return
	}
	t.trim()
}

// touched says that idle work (a scrape, a garbage collection) has run code
// the daemon will not need again for a while: the binary's read-only pages
// are unmapped again once it has been quiet for delay.
func (t *trimmer) touched() {
	if t == nil || t.image == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	if t.imageTimer == nil {
		t.imageTimer = time.AfterFunc(t.delay, t.image)
		return
	}
	t.imageTimer.Reset(t.delay)
}

// stop cancels a pending trim; no more are scheduled.
func (t *trimmer) stop() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	if t.timer != nil {
		t.timer.Stop()
	}
	if t.imageTimer != nil {
		t.imageTimer.Stop()
	}
}

// onEachGC calls f after every garbage collection cycle until stop is called:
// a finalizer on an object nothing references runs after each cycle that
// finds it unreachable, and sets itself again.
func onEachGC(f func()) (stop func()) {
	var stopped atomic.Bool
	type sentinel struct{ _ [16]byte } // not a tiny allocation: its own finalizer
	var fin func(*sentinel)
	fin = func(s *sentinel) {
		if stopped.Load() {
			return
		}
		f()
		runtime.SetFinalizer(s, fin)
	}
	runtime.SetFinalizer(&sentinel{}, fin)
	return func() { stopped.Store(true) }
}

// imageRanges are the binary's read-only mappings, found by the first full
// trim: they do not change while the process runs, and the light trim after
// idle work advises them without reading /proc again.
var imageRanges struct {
	sync.Mutex
	r     []addrRange
	found bool
}

// trimMemory closes the idle API connections and unmaps the binary's
// read-only pages; it returns the number of transports, the bytes of
// mappings it advised and the first error.
//
// It does not collect: the heap the burst left garbage is the collector's,
// whose forced run (every 2 minutes) frees it, shrinks the stacks the
// bootstrap grew, and lets the runtime return the pages (after which the
// light trim unmaps what that run read of the binary). Collecting here
// (runtime.GC and debug.FreeOSMemory, as this trim first did) returned
// 0.6 MiB up to 2 minutes sooner and cost each daemon about 16 ms of CPU
// in a scale-up of 500 on this 2-core machine, half of all it used
// (docs/metrics.md, "Memory").
func trimMemory() (transports int, image int64, err error) {
	transports = bootstrap.CloseIdleConnections()
	// Their goroutines send TLS close_notify and exit on their own: let them
	// finish, so that the code they run is dropped as well.
	time.Sleep(closeSettle)
	image, err = dropReadOnlyImage()
	return transports, image, err
}

// dropReadOnlyImage unmaps (MADV_DONTNEED) the pages of the executable's
// mappings that cannot be written: its code and read-only data. The
// executable is found as the file mapped at this function's own code, by
// device and inode, so a binary replaced on disk by a package upgrade (the
// path then ends in " (deleted)") is still found, and nothing else is.
func dropReadOnlyImage() (int64, error) {
	ranges, err := readOnlyImageRanges()
	if err != nil {
		return 0, err
	}
	return adviseDontNeed(ranges)
}

// readOnlyImageRanges finds the binary's read-only mappings, once: they do
// not change while the process runs. A static executable (no interpreter,
// not position-independent: how certagent is built) has no relocations, so
// none of its read-only mappings can hold private copies and /proc/self/maps
// says enough; for any other build /proc/self/smaps tells them apart, at the
// price of the kernel walking every page table to write it.
func readOnlyImageRanges() ([]addrRange, error) {
	imageRanges.Lock()
	defer imageRanges.Unlock()
	if imageRanges.found {
		return imageRanges.r, nil
	}
	path := "/proc/self/smaps"
	if staticExecutable("/proc/self/exe") {
		path = "/proc/self/maps"
	}
	maps, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	imageRanges.r = readOnlyImage(maps, uint64(reflect.ValueOf(dropReadOnlyImage).Pointer()))
	imageRanges.found = true
	return imageRanges.r, nil
}

// staticExecutable reports whether the ELF file at path is a 64-bit
// little-endian executable of type ET_EXEC (not position-independent) with
// no PT_INTERP program header (no dynamic loader). Anything it cannot read
// is not. It reads the two headers by hand: debug/elf would parse every
// section and link itself, and what it brings, into the daemon.
func staticExecutable(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var hdr [64]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil || string(hdr[:4]) != "\x7fELF" || hdr[4] != 2 || hdr[5] != 1 {
		return false // not ELF, not 64-bit, not little-endian
	}
	le := binary.LittleEndian
	const etExec, ptInterp = 2, 3
	if le.Uint16(hdr[16:]) != etExec {
		return false
	}
	phoff, phentsize, phnum := le.Uint64(hdr[32:]), int64(le.Uint16(hdr[54:])), int64(le.Uint16(hdr[56:]))
	if phentsize < 4 || phnum == 0 || phnum > 256 {
		return false
	}
	ph := make([]byte, phentsize*phnum)
	if _, err := f.ReadAt(ph, int64(phoff)); err != nil {
		return false
	}
	for i := int64(0); i < phnum; i++ {
		if le.Uint32(ph[i*phentsize:]) == ptInterp {
			return false
		}
	}
	return true
}

func adviseDontNeed(ranges []addrRange) (int64, error) {
	var total int64
	for _, r := range ranges {
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(r.start), uintptr(r.end-r.start), syscall.MADV_DONTNEED); errno != 0 {
			return total, errno
		}
		total += int64(r.end - r.start)
	}
	return total, nil
}

// TrimImage is the daemon's light trim after idle work (Options.TrimImage):
// it unmaps again the read-only pages of the binary the first full trim found,
// which a scrape or a garbage collection faulted back in. Nothing else: no
// collection, no allocation, no reading of /proc.
func TrimImage() {
	imageRanges.Lock()
	ranges := imageRanges.r
	imageRanges.Unlock()
	_, _ = adviseDontNeed(ranges)
}

type addrRange struct{ start, end uint64 }

// readOnlyImage parses /proc/self/smaps (or maps): the mappings without write
// permission and without private copies of pages (smaps' Anonymous) of the
// file whose mapping holds pc.
func readOnlyImage(maps []byte, pc uint64) []addrRange {
	type mapping struct {
		r        addrRange
		perms    string
		fileID   string // device and inode
		hasInode bool
		anonKiB  uint64 // smaps: pages copied into the process (written, relocated)
	}
	var all []mapping
	var self string
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// start-end perms offset dev inode [path], then in smaps "Key: n kB"
		f := bytes.Fields(sc.Bytes())
		if len(f) == 3 && string(f[0]) == "Anonymous:" && len(all) > 0 {
			all[len(all)-1].anonKiB, _ = strconv.ParseUint(string(f[1]), 10, 64)
			continue
		}
		if len(f) < 5 {
			continue
		}
		se := bytes.SplitN(f[0], []byte("-"), 2)
		if len(se) != 2 {
			continue
		}
		start, err1 := strconv.ParseUint(string(se[0]), 16, 64)
		end, err2 := strconv.ParseUint(string(se[1]), 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		m := mapping{r: addrRange{start, end}, perms: string(f[1]), fileID: string(f[3]) + " " + string(f[4]), hasInode: string(f[4]) != "0"}
		all = append(all, m)
		if m.hasInode && pc >= start && pc < end {
			self = m.fileID
		}
	}
	if self == "" {
		return nil
	}
	var out []addrRange
	for _, m := range all {
		if m.fileID == self && len(m.perms) == 4 && m.perms[1] == '-' && m.perms[3] == 'p' && m.anonKiB == 0 {
			out = append(out, m.r)
		}
	}
	return out
}

// TrimMemory is the daemon's trim (Options.Trim), logged at debug level.
func TrimMemory(log *zap.Logger) func() {
	return func() {
		transports, image, err := trimMemory()
		log := log.With(zap.Int("transports", transports), zap.Int64("image_bytes", image))
		if err != nil {
			log.Debug("returning memory to the OS", zap.Error(err))
			return
		}
		log.Debug("returned memory to the OS")
	}
}
