package reconcile

import (
	"errors"
	"fmt"
	"sync"
	"testing"
)

// TestJournalGroupCommit records from many goroutines at once, with run
// starts mixed in: every record lands once, in the log and in the current
// state, and a reopened journal sees the same.
func TestJournalGroupCommit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	j, _ := openTestJournal(t, dir)
	const workers, perWorker = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker*2+workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Every worker starts the same run: one start is recorded, the
			// rest are no-ops, wherever they fall in a batch.
			if err := j.StartRun(Run{ID: "r1", Generation: 1}); err != nil {
				errs <- err
			}
			for i := range perWorker {
				s := step("r1", 1, fmt.Sprintf("ctx/w%d.%d", w, i), "create", StepRunning)
				errs <- j.Record(s)
				s.State = StepDone
				errs <- j.Record(s)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	check := func(j *Journal, when string) {
		run, steps := j.Current()
		if run.ID != "r1" || len(steps) != workers*perWorker {
			t.Fatalf("%s: Current = %s with %d steps, want r1 with %d", when, run.ID, len(steps), workers*perWorker)
		}
		for _, s := range steps {
			if s.State != StepDone {
				t.Errorf("%s: step %s is %s, want done", when, s.ID, s.State)
			}
		}
		hist, err := j.History(HistoryFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(hist), 2*workers*perWorker; got != want {
			t.Errorf("%s: %d transitions in the history, want %d", when, got, want)
		}
		if u := j.Unfinished(); len(u) != 0 {
			t.Errorf("%s: %d unfinished", when, len(u))
		}
	}
	check(j, "live")
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.Record(step("r1", 1, "ctx/late.0", "create", StepRunning)); !errors.Is(err, ErrJournalClosed) {
		t.Errorf("Record after Close = %v, want ErrJournalClosed", err)
	}
	j2, _ := openTestJournal(t, dir)
	check(j2, "reopened")
}
