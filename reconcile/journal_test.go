package reconcile

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// openTestJournal opens a journal in dir with a stepping clock and a log
// captured in the returned buffer.
func openTestJournal(tb testing.TB, dir string, opts ...JournalOption) (*Journal, *syncBuffer) {
	tb.Helper()
	logs := &syncBuffer{}
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	tick := func() time.Time { clock.Advance(time.Second); return clock.Now() }
	all := append([]JournalOption{WithJournalLogger(slog.New(slog.NewTextHandler(logs, nil))), WithJournalClock(tick)}, opts...)
	j, err := OpenJournal(dir, all...)
	if err != nil {
		tb.Fatalf("OpenJournal(%s): %v", dir, err)
	}
	tb.Cleanup(func() { j.Close() })
	return j, logs
}

func step(run string, gen uint64, resource, action string, state StepState) Step {
	return Step{ID: StepID(gen, resource, action), Run: run, Generation: gen, Resource: resource, Action: action, State: state, Attempt: 1}
}

func mustRecord(tb testing.TB, j *Journal, steps ...Step) {
	tb.Helper()
	for _, s := range steps {
		if err := j.Record(s); err != nil {
			tb.Fatalf("Record(%s %s): %v", s.ID, s.State, err)
		}
	}
}

// stateOf reduces transitions to "id=state" strings, the part tests compare.
func stateOf(steps []Step) []string {
	var out []string
	for _, s := range steps {
		out = append(out, s.ID+"="+string(s.State))
	}
	return out
}

func TestStepID(t *testing.T) {
	t.Parallel()
	segment := regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	inputs := []struct {
		gen              uint64
		resource, action string
	}{
		{7, "ctx/web.0", "create"},
		{8, "ctx/web.0", "create"},
		{7, "ctx/web.1", "create"},
		{7, "ctx/web.0", "replace"},
		{7, "ctx/a-b", "create"},
		{7, "ctx-a/b", "create"}, // same readable text as the one above
		{0, "mid/Cache", "Start Primary"},
		{7, "ctx/web.0/create", ""},
	}
	seen := map[string]int{}
	for i, in := range inputs {
		id := StepID(in.gen, in.resource, in.action)
		if again := StepID(in.gen, in.resource, in.action); again != id {
			t.Errorf("StepID%v not deterministic: %s then %s", in, id, again)
		}
		if !segment.MatchString(id) {
			t.Errorf("StepID%v = %q, not a VFS segment", in, id)
		}
		if j, ok := seen[id]; ok {
			t.Errorf("StepID%v = StepID%v = %s", in, inputs[j], id)
		}
		seen[id] = i
	}
	if got, want := StepID(7, "ctx/web.0", "create"), "7-ctx-web.0-create-"; !strings.HasPrefix(got, want) {
		t.Errorf("StepID = %s, want prefix %s", got, want)
	}
}

func TestJournalRecordAndReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j, _ := openTestJournal(t, dir)
	run := Run{ID: "r1", Generation: 3, Commit: "abc123", Started: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), Steps: []string{"ignored"}}
	if err := j.StartRun(run); err != nil {
		t.Fatal(err)
	}
	a := step("r1", 3, "ctx/web.0", "create", StepRunning)
	b := step("r1", 3, "ctx/web.1", "create", StepRunning)
	aDone := a
	aDone.State, aDone.Ended, aDone.Report = StepDone, time.Date(2026, 3, 1, 0, 1, 0, 0, time.UTC), []byte{0xa1, 0x01, 0x02}
	bFail := b
	bFail.State, bFail.Error = StepFailed, "exec: not found"
	mustRecord(t, j, a, b, aDone, bFail)

	gotRun, gotSteps := j.Current()
	wantRun := run
	wantRun.Steps = []string{a.ID, b.ID}
	if !reflect.DeepEqual(gotRun, wantRun) {
		t.Errorf("Current run = %+v, want %+v", gotRun, wantRun)
	}
	if got, want := stateOf(gotSteps), []string{a.ID + "=done", b.ID + "=failed"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Current steps = %v, want %v", got, want)
	}
	hist, err := j.History(HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	recent := j.Recent(10)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	j2, logs := openTestJournal(t, dir)
	gotRun2, gotSteps2 := j2.Current()
	if !reflect.DeepEqual(gotRun2, gotRun) || !reflect.DeepEqual(gotSteps2, gotSteps) {
		t.Errorf("after reopen Current = %+v %+v\nwant %+v %+v", gotRun2, gotSteps2, gotRun, gotSteps)
	}
	hist2, err := j2.History(HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(hist2, hist) || len(hist) != 4 {
		t.Errorf("after reopen History = %+v\nwant %+v", hist2, hist)
	}
	if got := j2.Recent(10); !reflect.DeepEqual(got, recent) {
		t.Errorf("after reopen Recent = %+v\nwant %+v", got, recent)
	}
	if hist2[2].Report == nil || !bytes.Equal(hist2[2].Report, aDone.Report) || hist2[3].Error != bFail.Error {
		t.Errorf("report or error lost: %+v", hist2[2:])
	}
	if logs.String() != "" {
		t.Errorf("clean reopen logged: %s", logs)
	}
	// Starting the same run again (a restarted agent) changes nothing.
	if err := j2.StartRun(run); err != nil {
		t.Fatal(err)
	}
	if r, s := j2.Current(); !reflect.DeepEqual(r, gotRun) || len(s) != 2 {
		t.Errorf("StartRun of the current run changed it: %+v %+v", r, s)
	}
}

// TestJournalTornTail cuts the last record at every byte and reopens: the
// journal must open, drop exactly that record with one log line, and keep
// working.
func TestJournalTornTail(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	j, _ := openTestJournal(t, src)
	if err := j.StartRun(Run{ID: "r1", Generation: 1}); err != nil {
		t.Fatal(err)
	}
	first := step("r1", 1, "ctx/web.0", "create", StepRunning)
	mustRecord(t, j, first)
	// A crash while writing the last record happens before current.json is
	// replaced: keep the state file as it was then.
	current, err := os.ReadFile(filepath.Join(src, journalCurrent))
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(src, journalLog))
	if err != nil {
		t.Fatal(err)
	}
	last := first
	last.State = StepDone
	mustRecord(t, j, last)
	full, err := os.ReadFile(filepath.Join(src, journalLog))
	if err != nil {
		t.Fatal(err)
	}
	j.Close()

	start := len(before)
	t.Logf("cutting the last record (%d bytes) at every offset", len(full)-start)
	for cut := start; cut < len(full); cut++ {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, journalLog), full[:cut], 0o640); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, journalCurrent), current, 0o640); err != nil {
			t.Fatal(err)
		}
		j, logs := openTestJournal(t, dir)
		if got := strings.Count(logs.String(), "\n"); (cut > start && got != 1) || (cut == start && got != 0) {
			t.Errorf("cut at %d: %d log lines, want %d: %s", cut, got, min(cut-start, 1), logs)
		}
		if st, err := os.Stat(filepath.Join(dir, journalLog)); err != nil || st.Size() != int64(start) {
			t.Errorf("cut at %d: log size after open = %v, %v; want %d", cut, st.Size(), err, start)
		}
		_, steps := j.Current()
		if got, want := stateOf(steps), []string{first.ID + "=running"}; !reflect.DeepEqual(got, want) {
			t.Errorf("cut at %d: Current = %v, want %v", cut, got, want)
		}
		if got := stateOf(j.Unfinished()); !reflect.DeepEqual(got, []string{first.ID + "=running"}) {
			t.Errorf("cut at %d: Unfinished = %v", cut, got)
		}
		// Finishing after repair works and survives another reopen.
		mustRecord(t, j, last)
		j.Close()
		j2, logs2 := openTestJournal(t, dir)
		hist, err := j2.History(HistoryFilter{})
		if err != nil {
			t.Fatalf("cut at %d: History after repair: %v", cut, err)
		}
		if got, want := stateOf(hist), []string{first.ID + "=running", first.ID + "=done"}; !reflect.DeepEqual(got, want) {
			t.Errorf("cut at %d: History after repair = %v, want %v", cut, got, want)
		}
		if len(j2.Unfinished()) != 0 || logs2.String() != "" {
			t.Errorf("cut at %d: after repair Unfinished = %v, logs %q", cut, j2.Unfinished(), logs2)
		}
		j2.Close()
	}
}

// TestJournalReplaysPastCurrentState is a crash after the log record was
// synced and before current.json was replaced: open replays the record.
func TestJournalReplaysPastCurrentState(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j, _ := openTestJournal(t, dir)
	j.StartRun(Run{ID: "r1", Generation: 1})
	s := step("r1", 1, "ctx/web.0", "create", StepRunning)
	mustRecord(t, j, s)
	old, err := os.ReadFile(filepath.Join(dir, journalCurrent))
	if err != nil {
		t.Fatal(err)
	}
	done := s
	done.State = StepDone
	mustRecord(t, j, done, step("r1", 1, "ctx/web.1", "create", StepPending))
	j.Close()
	if err := os.WriteFile(filepath.Join(dir, journalCurrent), old, 0o640); err != nil {
		t.Fatal(err)
	}
	// A temporary file left by a crash mid-write is ignored and removed.
	if err := os.WriteFile(filepath.Join(dir, journalCurrentTmp), []byte(`{"seq":`), 0o640); err != nil {
		t.Fatal(err)
	}

	j2, _ := openTestJournal(t, dir)
	_, steps := j2.Current()
	want := []string{s.ID + "=done", StepID(1, "ctx/web.1", "create") + "=pending"}
	if got := stateOf(steps); !reflect.DeepEqual(got, want) {
		t.Errorf("Current = %v, want %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, journalCurrentTmp)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary state file still there: %v", err)
	}
	// The replayed state was written back.
	j2.Close()
	if err := os.Remove(filepath.Join(dir, journalLog)); err != nil {
		t.Fatal(err)
	}
	j3, _ := openTestJournal(t, dir)
	if _, steps := j3.Current(); !reflect.DeepEqual(stateOf(steps), want) {
		t.Errorf("current.json after replay = %v, want %v", stateOf(steps), want)
	}
}

func TestJournalUnfinishedAfterCrash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j, _ := openTestJournal(t, dir)
	j.StartRun(Run{ID: "r1", Generation: 1})
	a := step("r1", 1, "ctx/web.0", "create", StepRunning)
	b := step("r1", 1, "ctx/web.1", "create", StepPending)
	c := step("r1", 1, "ctx/web.2", "create", StepRunning)
	w := step("r1", 1, "mid/cache", "start", StepWaiting)
	cDone := c
	cDone.State = StepDone
	mustRecord(t, j, a, b, c, w, cDone)
	// The crash: no Close; a new agent opens the same directory.
	j2, _ := openTestJournal(t, dir)
	want := []string{a.ID + "=running", b.ID + "=pending", w.ID + "=waiting"}
	if got := stateOf(j2.Unfinished()); !reflect.DeepEqual(got, want) {
		t.Errorf("Unfinished = %v, want %v", got, want)
	}
	aDone := a
	aDone.State = StepDone
	mustRecord(t, j2, aDone)
	if got := stateOf(j2.Unfinished()); !reflect.DeepEqual(got, want[1:]) {
		t.Errorf("Unfinished after finishing %s = %v, want %v", a.ID, got, want[1:])
	}
}

func TestJournalSupersededRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j, _ := openTestJournal(t, dir)
	j.StartRun(Run{ID: "r1", Generation: 1})
	inflight := step("r1", 1, "ctx/web.0", "replace", StepRunning)
	pending := step("r1", 1, "ctx/web.1", "replace", StepPending)
	mustRecord(t, j, inflight, pending)
	if err := j.StartRun(Run{ID: "r2", Generation: 2, Commit: "def"}); err != nil {
		t.Fatal(err)
	}
	next := step("r2", 2, "ctx/web.1", "replace", StepRunning)
	mustRecord(t, j, next)

	run, steps := j.Current()
	if run.ID != "r2" || !reflect.DeepEqual(stateOf(steps), []string{next.ID + "=running"}) {
		t.Errorf("Current = %s %v, want r2 with only %s", run.ID, stateOf(steps), next.ID)
	}
	// The in-flight step of r1 stays unfinished, the pending one is
	// re-planned, across a crash too.
	want := []string{next.ID + "=running", inflight.ID + "=running"}
	if got := stateOf(j.Unfinished()); !reflect.DeepEqual(got, want) {
		t.Errorf("Unfinished = %v, want %v", got, want)
	}
	j2, _ := openTestJournal(t, dir)
	if got := stateOf(j2.Unfinished()); !reflect.DeepEqual(got, want) {
		t.Errorf("Unfinished after reopen = %v, want %v", got, want)
	}
	done := inflight
	done.State = StepDone
	mustRecord(t, j2, done)
	if got := stateOf(j2.Unfinished()); !reflect.DeepEqual(got, want[:1]) {
		t.Errorf("Unfinished after the old step ended = %v, want %v", got, want[:1])
	}
	// Its end is history, not part of r2.
	if _, steps := j2.Current(); len(steps) != 1 {
		t.Errorf("Current steps = %v, want only r2's", stateOf(steps))
	}
}

func TestJournalHistoryFilter(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j, _ := openTestJournal(t, dir) // the clock ticks one second per record
	j.StartRun(Run{ID: "r1", Generation: 1})
	resources := []string{"ctx/web.0", "ctx/web.1", "ctx/webx.0", "ctx/web.v2.0", "mid/web", "ctx/web"}
	for _, r := range resources {
		mustRecord(t, j, step("r1", 1, r, "create", StepRunning))
	}
	j.StartRun(Run{ID: "r2", Generation: 2})
	mustRecord(t, j, step("r2", 2, "ctx/web.0", "replace", StepDone))
	all, err := j.History(HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	res := func(steps []Step) []string {
		var out []string
		for _, s := range steps {
			out = append(out, s.Run+":"+s.Resource)
		}
		return out
	}
	tests := []struct {
		name string
		f    HistoryFilter
		want []string
	}{
		{"all", HistoryFilter{}, []string{"r1:ctx/web.0", "r1:ctx/web.1", "r1:ctx/webx.0", "r1:ctx/web.v2.0", "r1:mid/web", "r1:ctx/web", "r2:ctx/web.0"}},
		{"resource", HistoryFilter{Resource: "ctx/web.0"}, []string{"r1:ctx/web.0", "r2:ctx/web.0"}},
		{"ctx", HistoryFilter{CTX: "web"}, []string{"r1:ctx/web.0", "r1:ctx/web.1", "r1:ctx/web", "r2:ctx/web.0"}},
		{"ctx with a dot", HistoryFilter{CTX: "web.v2"}, []string{"r1:ctx/web.v2.0"}},
		{"run", HistoryFilter{Run: "r2"}, []string{"r2:ctx/web.0"}},
		{"since", HistoryFilter{Since: all[5].At}, []string{"r1:ctx/web", "r2:ctx/web.0"}},
		{"limit keeps the newest", HistoryFilter{CTX: "web", Limit: 2}, []string{"r1:ctx/web", "r2:ctx/web.0"}},
		{"nothing", HistoryFilter{Resource: "ctx/none"}, nil},
	}
	for _, tt := range tests {
		got, err := j.History(tt.f)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(res(got), tt.want) {
			t.Errorf("%s: History = %v, want %v", tt.name, res(got), tt.want)
		}
	}
}

func TestJournalRecent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j, _ := openTestJournal(t, dir, WithJournalRecent(3))
	j.StartRun(Run{ID: "r1", Generation: 1})
	var ids []string
	for i := range 5 {
		s := step("r1", 1, fmt.Sprintf("ctx/web.%d", i), "create", StepDone)
		ids = append(ids, s.ID+"=done")
		mustRecord(t, j, s)
	}
	tests := []struct {
		n    int
		want []string
	}{{0, nil}, {-1, nil}, {2, ids[3:]}, {3, ids[2:]}, {10, ids[2:]}}
	for _, tt := range tests {
		if got := stateOf(j.Recent(tt.n)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Recent(%d) = %v, want %v", tt.n, got, tt.want)
		}
	}
	j.Close()
	j2, _ := openTestJournal(t, dir, WithJournalRecent(3))
	if got := stateOf(j2.Recent(10)); !reflect.DeepEqual(got, ids[2:]) {
		t.Errorf("Recent after reopen = %v, want %v", got, ids[2:])
	}
}

func TestJournalRotation(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const max = 2000
	j, _ := openTestJournal(t, dir, WithJournalMaxLogBytes(max))
	j.StartRun(Run{ID: "r1", Generation: 1})
	const n = 60
	for i := range n {
		mustRecord(t, j, step("r1", 1, fmt.Sprintf("ctx/web.%d", i), "create", StepDone))
	}
	for _, name := range []string{journalLog, journalLogOld} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > max+500 {
			t.Errorf("%s is %d bytes, want about %d at most", name, st.Size(), max)
		}
	}
	hist, err := j.History(HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) == 0 || len(hist) >= n {
		t.Fatalf("History after rotation has %d of %d transitions, want the newest only", len(hist), n)
	}
	if got, want := hist[len(hist)-1].Resource, fmt.Sprintf("ctx/web.%d", n-1); got != want {
		t.Errorf("newest transition is %s, want %s", got, want)
	}
	// The current run outlives the rotation of its early records.
	j.Close()
	j2, _ := openTestJournal(t, dir, WithJournalMaxLogBytes(max))
	run, steps := j2.Current()
	if len(run.Steps) != n || len(steps) != n {
		t.Errorf("after rotation and reopen the run has %d steps, want %d", len(steps), n)
	}
	hist2, err := j2.History(HistoryFilter{})
	if err != nil || !reflect.DeepEqual(hist2, hist) {
		t.Errorf("History after reopen = %d transitions, %v; want %d", len(hist2), err, len(hist))
	}
}

func TestJournalBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j, _ := openTestJournal(t, dir)
	good := step("r1", 1, "ctx/web.0", "create", StepRunning)
	tests := []struct {
		name string
		edit func(*Step)
	}{
		{"no id", func(s *Step) { s.ID = "" }},
		{"no run", func(s *Step) { s.Run = "" }},
		{"no resource", func(s *Step) { s.Resource = "" }},
		{"no state", func(s *Step) { s.State = "" }},
		{"unknown state", func(s *Step) { s.State = "finished" }},
	}
	for _, tt := range tests {
		s := good
		tt.edit(&s)
		if err := j.Record(s); !errors.Is(err, ErrInvalidStep) {
			t.Errorf("%s: Record = %v, want ErrInvalidStep", tt.name, err)
		}
	}
	if err := j.StartRun(Run{Generation: 1}); !errors.Is(err, ErrInvalidRun) {
		t.Errorf("StartRun without id = %v, want ErrInvalidRun", err)
	}
	if h, _ := j.History(HistoryFilter{}); len(h) != 0 {
		t.Errorf("refused input reached the history: %v", h)
	}
	j.Close()
	if err := j.Record(good); !errors.Is(err, ErrJournalClosed) {
		t.Errorf("Record after Close = %v, want ErrJournalClosed", err)
	}
	if err := j.StartRun(Run{ID: "r9"}); !errors.Is(err, ErrJournalClosed) {
		t.Errorf("StartRun after Close = %v, want ErrJournalClosed", err)
	}
	if err := j.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}

	for _, tt := range []struct {
		name string
		opt  JournalOption
		want string
	}{
		{"max log bytes", WithJournalMaxLogBytes(0), "max log bytes 0 is not positive"},
		{"recent", WithJournalRecent(-1), "recent window -1 is negative"},
	} {
		if _, err := OpenJournal(t.TempDir(), tt.opt); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: OpenJournal = %v, want error containing %q", tt.name, err, tt.want)
		}
	}
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o640)
	if _, err := OpenJournal(file); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("OpenJournal on a file = %v, want an error naming %s", err, file)
	}
}

func TestJournalCorruptStateFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j, _ := openTestJournal(t, dir)
	j.StartRun(Run{ID: "r1", Generation: 1})
	s := step("r1", 1, "ctx/web.0", "create", StepRunning)
	mustRecord(t, j, s)
	j.Close()
	if err := os.WriteFile(filepath.Join(dir, journalCurrent), []byte("{not json"), 0o640); err != nil {
		t.Fatal(err)
	}
	j2, logs := openTestJournal(t, dir)
	if !strings.Contains(logs.String(), "unreadable current state") {
		t.Errorf("no log line for the damaged state file: %q", logs)
	}
	// Rebuilt from the log.
	if run, steps := j2.Current(); run.ID != "r1" || !reflect.DeepEqual(stateOf(steps), []string{s.ID + "=running"}) {
		t.Errorf("Current = %s %v, want r1 with %s running", run.ID, stateOf(steps), s.ID)
	}
}

// TestJournalKill9 records in a child process, kills it with SIGKILL at an
// arbitrary moment, and checks the journal opens consistent.
func TestJournalKill9(t *testing.T) {
	if dir := os.Getenv("CTXOS_JOURNAL_CRASH_DIR"); dir != "" {
		journalCrashChild(dir)
		return
	}
	t.Parallel()
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestJournalKill9$")
	cmd.Env = append(os.Environ(), "CTXOS_JOURNAL_CRASH_DIR="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		b, _ := os.ReadFile(filepath.Join(dir, journalLog))
		if bytes.Count(b, []byte("\n")) >= 300 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child recorded too little before the deadline; stderr: %s", stderr.String())
		}
		<-tick.C
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	j, logs := openTestJournal(t, dir)
	if n := strings.Count(logs.String(), "\n"); n > 1 {
		t.Errorf("recovery logged %d lines, want at most 1: %s", n, logs)
	}
	hist, err := j.History(HistoryFilter{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("recovered %d transitions; recovery log: %q", len(hist), logs.String())
	// Current and Unfinished agree with the last transition of each step.
	last := map[string]Step{}
	for _, s := range hist {
		last[s.ID] = s
	}
	run, steps := j.Current()
	for _, s := range steps {
		if got := last[s.ID]; got.State != s.State || got.Attempt != s.Attempt {
			t.Errorf("Current has %s %s attempt %d; history's last is %s attempt %d", s.ID, s.State, s.Attempt, got.State, got.Attempt)
		}
	}
	if len(steps) != len(last) {
		t.Errorf("Current has %d steps, history %d", len(steps), len(last))
	}
	var wantOpen []string
	for _, id := range run.Steps {
		if !last[id].State.Final() {
			wantOpen = append(wantOpen, id+"="+string(last[id].State))
		}
	}
	if got := stateOf(j.Unfinished()); !reflect.DeepEqual(got, wantOpen) {
		t.Errorf("Unfinished = %v, want %v", got, wantOpen)
	}
	if err := j.Record(step(run.ID, 1, "ctx/after.0", "create", StepDone)); err != nil {
		t.Errorf("Record after recovery: %v", err)
	}
}

// journalCrashChild records steps as fast as it can until it is killed.
func journalCrashChild(dir string) {
	j, err := OpenJournal(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err := j.StartRun(Run{ID: "r1", Generation: 1}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := 0; ; i++ {
		s := step("r1", 1, fmt.Sprintf("ctx/web.%d", i%50), "create", StepRunning)
		s.Attempt = i/50 + 1
		s.Error = strings.Repeat("x", i%300) // records of many lengths
		for _, st := range []StepState{StepRunning, StepDone} {
			s.State = st
			if err := j.Record(s); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
	}
}
