package reconcile

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// StepState is where a step is in its life.
type StepState string

// Step states: pending → running → done | failed (retried with a new
// attempt) | waiting (on a condition in the VFS, then running).
const (
	StepPending StepState = "pending"
	StepRunning StepState = "running"
	StepDone    StepState = "done"
	StepFailed  StepState = "failed"
	StepWaiting StepState = "waiting"
)

// Valid reports whether s is one of the step states.
func (s StepState) Valid() bool {
	switch s {
	case StepPending, StepRunning, StepDone, StepFailed, StepWaiting:
		return true
	}
	return false
}

// Final reports whether a step in state s has ended its attempt.
func (s StepState) Final() bool { return s == StepDone || s == StepFailed }

// Step is one driver change of a run, as recorded at one transition.
type Step struct {
	ID         string    `cbor:"id" json:"id"` // StepID(Generation, Resource, Action)
	Run        string    `cbor:"run" json:"run"`
	Generation uint64    `cbor:"generation" json:"generation"`
	Resource   string    `cbor:"resource" json:"resource"` // e.g. "ctx/web.0", "mid/cache"
	Action     string    `cbor:"action" json:"action"`     // e.g. "create", "replace"
	State      StepState `cbor:"state" json:"state"`
	Attempt    int       `cbor:"attempt" json:"attempt"`
	Error      string    `cbor:"error,omitempty" json:"error,omitempty"`
	Started    time.Time `cbor:"started,omitzero" json:"started,omitzero"`
	Ended      time.Time `cbor:"ended,omitzero" json:"ended,omitzero"`
	// At is when the journal recorded this transition; Record sets it.
	At time.Time `cbor:"at" json:"at"`
	// Report is the driver's change report, CBOR-encoded by the loop; the
	// journal keeps it opaque.
	Report []byte `cbor:"report,omitempty" json:"report,omitempty"`
}

// StepID is the deterministic id of the step that applies action to
// resource for a generation. It is a valid VFS path segment, readable
// ("7-ctx-web.0-create-…"), and the hash of the exact triple at the end
// keeps ids distinct when the readable part maps two inputs to the same
// text.
func StepID(generation uint64, resource, action string) string {
	h := hashString(strconv.FormatUint(generation, 10) + "\x00" + resource + "\x00" + action)
	return strconv.FormatUint(generation, 10) + "-" + segmentText(resource) + "-" + segmentText(action) + "-" + fmt.Sprintf("%016x", h)
}

// segmentText maps s to the characters a VFS segment allows.
func segmentText(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			b[i] = '-'
		}
	}
	return string(b)
}

// Run is one pass towards one generation. Steps lists the ids of the steps
// recorded for it, in the order they were first recorded; the journal keeps
// it.
type Run struct {
	ID         string    `cbor:"id" json:"id"`
	Generation uint64    `cbor:"generation" json:"generation"`
	Commit     string    `cbor:"commit" json:"commit"`
	Started    time.Time `cbor:"started" json:"started"`
	Steps      []string  `cbor:"steps,omitempty" json:"steps,omitempty"`
}

// HistoryFilter selects step transitions from the history. Zero fields match
// everything.
type HistoryFilter struct {
	Resource string    // exact resource, e.g. "ctx/web.0"
	CTX      string    // every instance of a CTX: resources "ctx/<CTX>" and "ctx/<CTX>.<index>"
	Run      string    // one run
	Since    time.Time // transitions recorded at or after Since
	Limit    int       // the newest Limit matches (still oldest first); 0 for all
}

func (f HistoryFilter) match(s Step) bool {
	if f.Resource != "" && s.Resource != f.Resource {
		return false
	}
	if f.CTX != "" {
		rest, ok := strings.CutPrefix(s.Resource, "ctx/")
		if !ok {
			return false
		}
		if rest != f.CTX {
			if ctx, _, err := ParseInstanceID(rest); err != nil || ctx != f.CTX {
				return false
			}
		}
	}
	if f.Run != "" && s.Run != f.Run {
		return false
	}
	return f.Since.IsZero() || !s.At.Before(f.Since)
}

// Files of a journal directory.
const (
	journalLog        = "history.log"   // append-only transitions, one record per line
	journalLogOld     = "history.log.1" // the previous log after rotation
	journalCurrent    = "current.json"  // the last run and its steps, replaced atomically
	journalCurrentTmp = "current.json.tmp"
)

// Defaults of [OpenJournal].
const (
	DefaultJournalMaxLogBytes = 32 << 20
	DefaultJournalRecent      = 256
)

// JournalOption configures [OpenJournal].
type JournalOption func(*Journal)

// WithJournalLogger sets the logger for recovery messages (default
// slog.Default()).
func WithJournalLogger(l *slog.Logger) JournalOption { return func(j *Journal) { j.logger = l } }

// WithJournalClock sets the clock that stamps [Step.At] (default time.Now).
func WithJournalClock(now func() time.Time) JournalOption { return func(j *Journal) { j.now = now } }

// WithJournalMaxLogBytes sets the size at which the history log rotates
// (default DefaultJournalMaxLogBytes).
func WithJournalMaxLogBytes(n int64) JournalOption { return func(j *Journal) { j.maxLogBytes = n } }

// WithJournalRecent sets how many transitions [Journal.Recent] can return
// (default DefaultJournalRecent).
func WithJournalRecent(n int) JournalOption { return func(j *Journal) { j.recentMax = n } }

// Journal is the on-disk record of runs and steps: what lets an agent that
// crashed mid-step find that step again, and what `ctxos history` shows.
//
// On disk, in its directory:
//   - history.log: every transition, appended and fsynced before anything
//     else changes. One record per line: the CRC-32C of the JSON in eight
//     hex digits, a space, the JSON, a newline. A record without its newline
//     or with a bad CRC is a torn write from a crash; at open it and
//     everything after it are cut off, with one log line.
//   - current.json: the last run and the latest state of each of its steps
//     (plus steps of older runs that were still running), with the sequence
//     number of the last record it includes. It is written to a temporary
//     file, fsynced and renamed over the old one after every record, so it
//     is always whole; records the log has beyond it are replayed at open.
//   - Retention: when history.log reaches the maximum size it becomes
//     history.log.1, replacing the previous one, and a new log starts. The
//     history on disk is thus between one and two logs long; current.json
//     holds what the current run needs, whatever was rotated away.
//
// A Journal is safe for concurrent use.
type Journal struct {
	dir         string
	logger      *slog.Logger
	now         func() time.Time
	maxLogBytes int64
	recentMax   int

	// qmu guards queue: records waiting for the next group commit. Lock
	// order: mu, then qmu.
	qmu   sync.Mutex
	queue []*pendingRecord

	mu      sync.Mutex
	log     *os.File // nil once closed
	logSize int64
	seq     uint64
	state   journalState
	recent  []Step // oldest first, at most recentMax
}

// journalState is the content of current.json.
type journalState struct {
	Seq   uint64          `json:"seq"`
	Run   Run             `json:"run"`
	Steps map[string]Step `json:"steps,omitempty"` // the run's steps by id
	// Open holds steps of superseded runs whose last transition was
	// running: the in-flight step a new run lets finish, which must not be
	// forgotten if the agent crashes before it ends.
	Open map[string]Step `json:"open,omitempty"`
}

// journalRecord is one line of the history log: a run start or a step
// transition.
type journalRecord struct {
	Seq  uint64    `json:"seq"`
	At   time.Time `json:"at"`
	Run  *Run      `json:"run,omitempty"`
	Step *Step     `json:"step,omitempty"`
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// OpenJournal opens or creates the journal in dir (a directory under the
// agent's data dir), repairing a torn tail left by a crash and rebuilding
// the current run from disk.
func OpenJournal(dir string, opts ...JournalOption) (*Journal, error) {
	j := &Journal{dir: dir, maxLogBytes: DefaultJournalMaxLogBytes, recentMax: DefaultJournalRecent}
	for _, o := range opts {
		o(j)
	}
	if j.logger == nil {
		j.logger = slog.Default()
	}
	if j.now == nil {
		j.now = time.Now
	}
	if j.maxLogBytes <= 0 {
		return nil, fmt.Errorf("open journal %s: max log bytes %d is not positive", dir, j.maxLogBytes)
	}
	if j.recentMax < 0 {
		return nil, fmt.Errorf("open journal %s: recent window %d is negative", dir, j.recentMax)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if err := os.Remove(filepath.Join(dir, journalCurrentTmp)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if err := j.loadCurrent(); err != nil {
		return nil, err
	}
	stateSeq := j.state.Seq
	if err := j.replay(filepath.Join(dir, journalLogOld), false); err != nil {
		return nil, err
	}
	if err := j.replay(filepath.Join(dir, journalLog), true); err != nil {
		return nil, err
	}
	if j.seq < j.state.Seq {
		j.seq = j.state.Seq
	}
	f, err := os.OpenFile(filepath.Join(dir, journalLog), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open journal: %w", err)
	}
	j.log, j.logSize = f, st.Size()
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if j.state.Seq != stateSeq {
		if err := j.writeCurrent(); err != nil {
			f.Close()
			return nil, err
		}
	}
	return j, nil
}

func (j *Journal) loadCurrent() error {
	path := filepath.Join(j.dir, journalCurrent)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open journal: %w", err)
	}
	var st journalState
	if err := json.Unmarshal(b, &st); err != nil {
		// current.json is only ever replaced by rename, so this is damage
		// from outside; the logs still hold what they hold.
		j.logger.Warn("journal: unreadable current state, rebuilding from the history log", "path", path, "err", err)
		return nil
	}
	j.state = st
	return nil
}

// replay reads a history log, applies the records current.json does not
// include yet and fills the recent window. In the live log (repair) a torn
// or corrupt record and everything after it are cut off.
func (j *Journal) replay(path string, repair bool) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open journal: %w", err)
	}
	off := 0
	for off < len(b) {
		rec, n, perr := parseRecord(b[off:])
		if perr != nil {
			if !repair {
				j.logger.Warn("journal: ignoring the rest of a damaged rotated log", "path", path, "offset", off, "err", perr)
				return nil
			}
			j.logger.Warn("journal: truncating a torn record at the end of the history log",
				"path", path, "offset", off, "dropped_bytes", len(b)-off, "err", perr)
			if err := truncateSync(path, int64(off)); err != nil {
				return fmt.Errorf("open journal: repair %s: %w", path, err)
			}
			return nil
		}
		off += n
		j.seq = max(j.seq, rec.Seq)
		if rec.Seq > j.state.Seq {
			j.state.apply(rec)
		}
		if rec.Step != nil {
			j.remember(*rec.Step)
		}
	}
	return nil
}

// parseRecord reads the record at the start of b and returns it with the
// number of bytes it took.
func parseRecord(b []byte) (journalRecord, int, error) {
	var rec journalRecord
	nl := bytes.IndexByte(b, '\n')
	if nl < 0 {
		return rec, 0, errors.New("record without its newline")
	}
	line := b[:nl]
	if len(line) < 10 || line[8] != ' ' {
		return rec, 0, errors.New("record without a checksum")
	}
	var sum [4]byte
	if _, err := hex.Decode(sum[:], line[:8]); err != nil {
		return rec, 0, fmt.Errorf("checksum: %w", err)
	}
	body := line[9:]
	if got, want := crc32.Checksum(body, crcTable), uint32(sum[0])<<24|uint32(sum[1])<<16|uint32(sum[2])<<8|uint32(sum[3]); got != want {
		return rec, 0, fmt.Errorf("checksum %08x, record says %08x", got, want)
	}
	if err := json.Unmarshal(body, &rec); err != nil {
		return rec, 0, fmt.Errorf("decode: %w", err)
	}
	if (rec.Run == nil) == (rec.Step == nil) {
		return rec, 0, errors.New("record is neither a run nor a step")
	}
	return rec, nl + 1, nil
}

func encodeRecord(rec journalRecord) ([]byte, error) {
	body, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	line := make([]byte, 0, len(body)+10)
	line = fmt.Appendf(line, "%08x ", crc32.Checksum(body, crcTable))
	line = append(line, body...)
	return append(line, '\n'), nil
}

func (st *journalState) apply(rec journalRecord) {
	st.Seq = rec.Seq
	if r := rec.Run; r != nil {
		if r.ID == st.Run.ID {
			return
		}
		// Pending and waiting steps of the old run never touched anything
		// and are re-planned; a running one is in flight and must be found
		// again if it does not end.
		for _, s := range st.Steps {
			if s.State == StepRunning {
				if st.Open == nil {
					st.Open = map[string]Step{}
				}
				st.Open[s.ID] = s
			}
		}
		st.Run = *r
		st.Run.Steps = nil
		st.Steps = map[string]Step{}
		return
	}
	s := *rec.Step
	if s.Run == st.Run.ID && st.Run.ID != "" {
		if _, ok := st.Steps[s.ID]; !ok {
			st.Run.Steps = append(st.Run.Steps, s.ID)
		}
		if st.Steps == nil {
			st.Steps = map[string]Step{}
		}
		st.Steps[s.ID] = s
		return
	}
	if s.State == StepRunning {
		if st.Open == nil {
			st.Open = map[string]Step{}
		}
		st.Open[s.ID] = s
	} else {
		delete(st.Open, s.ID)
	}
}

func (j *Journal) remember(s Step) {
	if j.recentMax == 0 {
		return
	}
	if len(j.recent) == j.recentMax {
		copy(j.recent, j.recent[1:])
		j.recent = j.recent[:len(j.recent)-1]
	}
	j.recent = append(j.recent, s)
}

// StartRun records the start of run r, which supersedes the current run:
// its pending and waiting steps are dropped (they are re-planned), its
// running ones stay in [Journal.Unfinished] until they end. Starting the
// current run again, as a restarted agent does, changes nothing. r.Steps is
// ignored; the journal fills it as steps are recorded.
func (j *Journal) StartRun(r Run) error {
	if r.ID == "" {
		return fmt.Errorf("%w: run for generation %d has no id", ErrInvalidRun, r.Generation)
	}
	r.Steps = nil
	return j.commit(journalRecord{Run: &r})
}

// Record appends a step transition to the history log and fsyncs it, then
// updates the current state; the loop calls it before a step runs (running)
// and after it ends (done or failed). It sets s.At to the journal's clock.
// Steps of a run other than the current one go to the history but only a
// running one is kept as unfinished.
//
// Concurrent calls are committed together: records that queue while one
// commit is being fsynced share the next write, fsync and current.json
// rewrite, so a loop applying steps in parallel does not pay one of each
// per transition. Each call still returns only once its record is durable.
func (j *Journal) Record(s Step) error {
	switch {
	case s.ID == "":
		return fmt.Errorf("%w: step of %s has no id", ErrInvalidStep, s.Resource)
	case s.Run == "":
		return fmt.Errorf("%w: step %s has no run", ErrInvalidStep, s.ID)
	case s.Resource == "":
		return fmt.Errorf("%w: step %s has no resource", ErrInvalidStep, s.ID)
	case !s.State.Valid():
		return fmt.Errorf("%w: step %s: unknown state %q", ErrInvalidStep, s.ID, s.State)
	}
	return j.commit(journalRecord{Step: &s})
}

// pendingRecord is a record queued for the next group commit. finished and
// err are written and read with j.mu held.
type pendingRecord struct {
	rec      journalRecord
	finished bool
	err      error
}

// commit queues rec and returns once it is committed, by this caller or by
// whichever caller held j.mu before it and took the queue along.
func (j *Journal) commit(rec journalRecord) error {
	p := &pendingRecord{rec: rec}
	j.qmu.Lock()
	j.queue = append(j.queue, p)
	j.qmu.Unlock()
	j.mu.Lock()
	defer j.mu.Unlock()
	if !p.finished {
		j.qmu.Lock()
		batch := j.queue
		j.queue = nil
		j.qmu.Unlock()
		j.appendBatch(batch)
	}
	return p.err
}

// appendBatch writes the records of batch to the log in one write and one
// fsync, applies them, writes current.json once and rotates if due; each
// record's err says how it went. A run start of the run already current
// (counting earlier records of the batch) is a no-op. Called with j.mu held.
func (j *Journal) appendBatch(batch []*pendingRecord) {
	fail := func(ps []*pendingRecord, err error) {
		for _, p := range ps {
			p.finished, p.err = true, err
		}
	}
	if j.log == nil {
		fail(batch, ErrJournalClosed)
		return
	}
	now := j.now().UTC()
	cur := j.state.Run.ID
	seq := j.seq
	var buf []byte
	var written []*pendingRecord
	for _, p := range batch {
		if r := p.rec.Run; r != nil {
			if r.ID == cur {
				fail([]*pendingRecord{p}, nil)
				continue
			}
			cur = r.ID
		}
		seq++
		p.rec.Seq, p.rec.At = seq, now
		if p.rec.Step != nil {
			p.rec.Step.At = now
		}
		line, err := encodeRecord(p.rec)
		if err != nil {
			fail([]*pendingRecord{p}, fmt.Errorf("journal: encode: %w", err))
			seq--
			continue
		}
		buf = append(buf, line...)
		written = append(written, p)
	}
	if len(written) == 0 {
		return
	}
	if _, err := j.log.Write(buf); err != nil {
		// Cut a partial write off now, or the next open would cut off
		// everything recorded after it.
		if terr := j.log.Truncate(j.logSize); terr != nil {
			fail(written, fmt.Errorf("journal: append: %w (and truncate: %v)", err, terr))
			return
		}
		fail(written, fmt.Errorf("journal: append: %w", err))
		return
	}
	if err := j.log.Sync(); err != nil {
		fail(written, fmt.Errorf("journal: sync: %w", err))
		return
	}
	j.seq = seq
	j.logSize += int64(len(buf))
	for _, p := range written {
		j.state.apply(p.rec)
		if p.rec.Step != nil {
			j.remember(*p.rec.Step)
		}
	}
	err := j.writeCurrent()
	if err == nil && j.logSize >= j.maxLogBytes {
		err = j.rotate()
	}
	fail(written, err)
}

func (j *Journal) writeCurrent() error {
	b, err := json.Marshal(j.state)
	if err != nil {
		return fmt.Errorf("journal: encode current state: %w", err)
	}
	tmp := filepath.Join(j.dir, journalCurrentTmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("journal: write current state: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(j.dir, journalCurrent))
	}
	if err != nil {
		return fmt.Errorf("journal: write current state: %w", err)
	}
	return nil
}

// rotate moves the full log to history.log.1 and starts a new one. The
// current state was just written; syncing the directory first makes its
// rename durable before the records it replaces can disappear.
func (j *Journal) rotate() error {
	if err := syncDir(j.dir); err != nil {
		return fmt.Errorf("journal: rotate: %w", err)
	}
	if err := j.log.Close(); err != nil {
		return fmt.Errorf("journal: rotate: %w", err)
	}
	j.log = nil
	if err := os.Rename(filepath.Join(j.dir, journalLog), filepath.Join(j.dir, journalLogOld)); err != nil {
		return j.reopenAfter(fmt.Errorf("journal: rotate: %w", err))
	}
	return j.reopenAfter(nil)
}

// reopenAfter opens the live log again after a rotation attempt, so the
// journal stays usable when the rename failed.
func (j *Journal) reopenAfter(rotErr error) error {
	f, err := os.OpenFile(filepath.Join(j.dir, journalLog), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return errors.Join(rotErr, fmt.Errorf("journal: reopen log: %w", err))
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return errors.Join(rotErr, fmt.Errorf("journal: reopen log: %w", err))
	}
	j.log, j.logSize = f, st.Size()
	if err := syncDir(j.dir); err != nil {
		return errors.Join(rotErr, fmt.Errorf("journal: rotate: %w", err))
	}
	return rotErr
}

// Current returns the last run and the latest state of each of its steps, in
// the order they were first recorded.
func (j *Journal) Current() (Run, []Step) {
	j.mu.Lock()
	defer j.mu.Unlock()
	run := j.state.Run
	run.Steps = slices.Clone(run.Steps)
	steps := make([]Step, 0, len(run.Steps))
	for _, id := range run.Steps {
		steps = append(steps, j.state.Steps[id])
	}
	return run, steps
}

// Unfinished returns the steps whose last transition is not done or failed:
// after a crash, the steps to re-observe and finish. Steps of the current run
// come first in record order, then running steps of superseded runs by id.
func (j *Journal) Unfinished() []Step {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []Step
	for _, id := range j.state.Run.Steps {
		if s := j.state.Steps[id]; !s.State.Final() {
			out = append(out, s)
		}
	}
	ids := make([]string, 0, len(j.state.Open))
	for id := range j.state.Open {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		out = append(out, j.state.Open[id])
	}
	return out
}

// History reads every step transition on disk that matches f, oldest first.
func (j *Journal) History(f HistoryFilter) ([]Step, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []Step
	for _, name := range []string{journalLogOld, journalLog} {
		path := filepath.Join(j.dir, name)
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("journal history: %w", err)
		}
		for off := 0; off < len(b); {
			rec, n, err := parseRecord(b[off:])
			if err != nil {
				return nil, fmt.Errorf("journal history: %s at offset %d: %w", path, off, err)
			}
			off += n
			if rec.Step != nil && f.match(*rec.Step) {
				out = append(out, *rec.Step)
			}
		}
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out, nil
}

// Recent returns the last n step transitions (at most the recent window),
// oldest first: what the loop publishes in /run/<node>/history.
func (j *Journal) Recent(n int) []Step {
	j.mu.Lock()
	defer j.mu.Unlock()
	if n <= 0 {
		return nil
	}
	n = min(n, len(j.recent))
	return slices.Clone(j.recent[len(j.recent)-n:])
}

// Close closes the journal. Reads keep working on what was loaded; writes
// return ErrJournalClosed.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.log == nil {
		return nil
	}
	err := j.log.Close()
	j.log = nil
	return err
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
