package process

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ctxos/ctxos/drivers"
)

// recordVersion is written into every record so a later format can tell.
const recordVersion = 1

// record is the durable state of one instance, StateDir/instances/<id>.json.
// It is what lets a restarted agent re-adopt a running process instead of
// starting it twice.
type record struct {
	Version  int          `json:"version"`
	ID       string       `json:"id"`
	SpecHash string       `json:"spec_hash"`
	Spec     drivers.Spec `json:"spec"`
	// StartID is a random id given to each start, also put in the process's
	// environment as CTXOS_START_ID: if the agent dies between starting the
	// process and recording its pid, the next agent finds it by this label.
	StartID string `json:"start_id"`
	Pid     int    `json:"pid,omitempty"`
	// StartTicks is field 22 of /proc/<pid>/stat (clock ticks since boot).
	// A pid is ours only if its start time matches: pids are reused.
	StartTicks uint64        `json:"start_ticks,omitempty"`
	StartedAt  time.Time     `json:"started_at,omitzero"`
	State      drivers.State `json:"state"`
	ExitCode   int           `json:"exit_code"`
	Restarts   int           `json:"restarts"`
	// QuickExits counts exits in a row that came before BackoffReset; it
	// sets the next backoff.
	QuickExits int       `json:"quick_exits,omitempty"`
	Message    string    `json:"message,omitempty"`
	NextStart  time.Time `json:"next_start,omitzero"`
}

func (r record) instance() drivers.Instance {
	inst := drivers.Instance{
		ID:        r.ID,
		SpecHash:  r.SpecHash,
		State:     r.State,
		Pid:       r.Pid,
		StartedAt: r.StartedAt,
		ExitCode:  r.ExitCode,
		Restarts:  r.Restarts,
		Message:   r.Message,
	}
	if r.Spec.ID != "" {
		spec := r.Spec
		inst.Spec = &spec
		inst.Ports = spec.Ports
	}
	return inst
}

func (d *Driver) recordPath(id string) string {
	return filepath.Join(d.cfg.StateDir, "instances", id+".json")
}

// readRecord returns the record of id; an error wrapping os.ErrNotExist if
// there is none.
func (d *Driver) readRecord(id string) (record, error) {
	path := d.recordPath(id)
	b, err := os.ReadFile(path)
	if err != nil {
		return record{}, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return record{}, fmt.Errorf("%w: %s: %v", ErrCorruptRecord, path, err)
	}
	if r.ID != id {
		return record{}, fmt.Errorf("%w: %s: holds instance %q", ErrCorruptRecord, path, r.ID)
	}
	return r, nil
}

// writeRecord replaces the record atomically: a crash leaves the old record
// or the new one, never a torn one.
func (d *Driver) writeRecord(r record) error {
	r.Version = recordVersion
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode record %s: %w", r.ID, err)
	}
	return writeFileAtomic(d.recordPath(r.ID), b)
}

func (d *Driver) removeRecord(id string) error {
	if err := os.Remove(d.recordPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove record %s: %w", id, err)
	}
	return syncDir(filepath.Dir(d.recordPath(id)))
}

// recordIDs lists the instance ids that have a record, sorted.
func (d *Driver) recordIDs() ([]string, error) {
	dir := filepath.Join(d.cfg.StateDir, "instances")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list records in %s: %w", dir, err)
	}
	var ids []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		ids = append(ids, strings.TrimSuffix(name, ".json"))
	}
	sort.Strings(ids)
	return ids, nil
}

func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(dir)
}

// syncDir makes a rename or remove in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
