package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/reconcile"
)

func init() { register(newLogsCmd) }

// logPoll is how often a followed log file is checked for growth. The
// drivers write logs straight to files (never through the agent), so
// polling the size is the one way that works for every runtime.
const logPoll = 200 * time.Millisecond

// logFiles returns the files ds write instance id's output to, those that
// exist: stdout and stderr for the process driver, one file for
// containerd.
func logFiles(ds map[string]drivers.Driver, id string) []string {
	var out []string
	names := make([]string, 0, len(ds))
	for name := range ds {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		var paths []string
		switch d := ds[name].(type) {
		case interface{ LogPaths(string) (string, string) }:
			o, e := d.LogPaths(id)
			paths = []string{o, e}
		case interface{ LogPath(string) string }:
			paths = []string{d.LogPath(id)}
		}
		for _, p := range paths {
			if _, err := os.Stat(p); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// serveLogs answers GET /v1/logs/{id}?follow=1&tail=N with the output of
// instance id on this node, as text. With follow it goes on sending lines
// as the files grow, until the client goes away; a file that shrinks was
// rotated by truncation and is read again from its start. tail applies to
// each file of the instance (a process has stdout and stderr).
func serveLogs(node string, ds map[string]drivers.Driver, poll time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if !drivers.ValidID(id) {
			writeHTTPJSON(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("%q is not an instance id", id)})
			return
		}
		q := r.URL.Query()
		follow := q.Get("follow") == "1" || q.Get("follow") == "true"
		tail := -1
		if s := q.Get("tail"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				writeHTTPJSON(w, http.StatusBadRequest, map[string]string{"error": "tail: want a number ≥ 0"})
				return
			}
			tail = n
		}
		paths := logFiles(ds, id)
		if len(paths) == 0 {
			writeHTTPJSON(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no logs of instance %s on node %s", id, node)})
			return
		}
		files := make([]*logFile, len(paths))
		for i, p := range paths {
			files[i] = &logFile{path: p}
			if tail >= 0 {
				off, err := tailOffset(p, tail)
				if err != nil {
					writeHTTPJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
					return
				}
				files[i].off = off
			}
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		flusher, _ := w.(http.Flusher)
		for {
			for _, f := range files {
				if err := f.copyTo(w, !follow); err != nil {
					return
				}
			}
			if flusher != nil {
				flusher.Flush()
			}
			if !follow {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(poll):
			}
		}
	})
}

// logFile is one followed file: where we are in it and the start of a
// line not yet ended.
type logFile struct {
	path    string
	off     int64
	partial []byte
}

// copyTo writes what f gained since the last call, whole lines only unless
// final. A file smaller than where we are was truncated by rotation: read
// it again from the start. A missing file has nothing yet.
func (f *logFile) copyTo(w io.Writer, final bool) error {
	fh, err := os.Open(f.path)
	if err != nil {
		return nil
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil
	}
	if fi.Size() < f.off {
		f.off, f.partial = 0, nil
	}
	if fi.Size() > f.off {
		b := make([]byte, fi.Size()-f.off)
		n, err := fh.ReadAt(b, f.off)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil
		}
		f.off += int64(n)
		data := append(f.partial, b[:n]...)
		end := bytes.LastIndexByte(data, '\n') + 1
		if _, err := w.Write(data[:end]); err != nil {
			return err
		}
		f.partial = append([]byte(nil), data[end:]...)
	}
	if final && len(f.partial) > 0 {
		_, err := w.Write(append(f.partial, '\n'))
		f.partial = nil
		return err
	}
	return nil
}

// tailOffset is where the last n lines of path begin (a last line without
// a newline counts as one).
func tailOffset(path string, n int) (int64, error) {
	fh, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return 0, err
	}
	end := fi.Size()
	if n == 0 {
		return end, nil
	}
	const chunk = 32 << 10
	buf := make([]byte, chunk)
	pos := end
	seen := 0
	first := true
	for pos > 0 {
		size := min(int64(chunk), pos)
		pos -= size
		if _, err := fh.ReadAt(buf[:size], pos); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		for i := size - 1; i >= 0; i-- {
			if buf[i] != '\n' {
				continue
			}
			if first && pos+i == end-1 {
				// The file's final newline ends the last line; it does
				// not start one.
				first = false
				continue
			}
			first = false
			seen++
			if seen == n {
				return pos + i + 1, nil
			}
		}
		first = false
	}
	return 0, nil
}

// logTarget is one instance whose logs are shown, and the node running it.
type logTarget struct {
	node, id, api string
}

func newLogsCmd() *cobra.Command {
	var (
		f      *clientFlags
		follow bool
		tail   int
	)
	cmd := &cobra.Command{
		Use:   "logs CTX[/INDEX]",
		Short: "Print the output of a CTX's instances, from the nodes that run them",
		Long: `Print the output of every instance of CTX (or of instance INDEX only),
fetched from the node that runs it. Where instances run is read from
/run/*/instances through the agent at --api; the output comes from each
node's API. Lines are prefixed with the instance id when more than one
instance is shown. With -f the output is followed until Ctrl-C. A node
that does not answer is named on stderr and the others are still shown.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, index, err := parseLogsArg(args[0])
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if tail < -1 {
				return &exitError{code: 2, err: fmt.Errorf("--tail %d: want a number ≥ 0", tail)}
			}
			ctx := cmd.Context()
			targets, err := findLogTargets(ctx, f.client(), name, index)
			if err != nil {
				return err
			}
			return streamLogs(ctx, cmd.OutOrStdout(), cmd.ErrOrStderr(), targets, follow, tail)
		},
	}
	f = addClientFlags(cmd)
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "go on printing new output until interrupted")
	cmd.Flags().IntVar(&tail, "tail", -1, "only the last N lines of each log file (default: all)")
	return cmd
}

// parseLogsArg splits "web" or "web/2"; index is -1 without one.
func parseLogsArg(arg string) (string, int, error) {
	name, idx, hasIdx := strings.Cut(arg, "/")
	if name == "" {
		return "", 0, fmt.Errorf("%q: want CTX or CTX/INDEX", arg)
	}
	if !hasIdx {
		return name, -1, nil
	}
	n, err := strconv.Atoi(idx)
	if err != nil || n < 0 {
		return "", 0, fmt.Errorf("%q: INDEX %q is not a number ≥ 0", arg, idx)
	}
	return name, n, nil
}

// findLogTargets reads where the instances of CTX name run (all, or the one
// of index ≥ 0) and the API of each node running one.
func findLogTargets(ctx context.Context, c *cluster.Client, name string, index int) ([]logTarget, error) {
	entries, err := c.List(ctx, "/run")
	if err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	want := reconcile.CTXSpecID(reconcile.InstanceID(name, max(index, 0)))
	var targets []logTarget
	for _, e := range entries {
		node, ok := strings.CutSuffix(strings.TrimPrefix(e.Path, "/run/"), "/instances")
		if !ok || strings.Contains(node, "/") || e.Deleted {
			continue
		}
		var insts map[string]reconcile.InstanceStatus
		if err := json.Unmarshal(e.Value, &insts); err != nil {
			return nil, &exitError{code: 2, err: fmt.Errorf("%s: %w", e.Path, err)}
		}
		for id, st := range insts {
			if st.Kind != drivers.KindCTX || st.Name != name || (index >= 0 && id != want) {
				continue
			}
			targets = append(targets, logTarget{node: node, id: id})
		}
	}
	if len(targets) == 0 {
		what := "ctx " + name
		if index >= 0 {
			what = fmt.Sprintf("instance %s of ctx %s", want, name)
		}
		if _, err := c.Get(ctx, "/ctx/"+name); errors.Is(err, cluster.ErrNotFound) {
			return nil, &exitError{code: 1, err: fmt.Errorf("ctx %s is not in the desired state (no /ctx/%s)", name, name)}
		}
		return nil, &exitError{code: 1, err: fmt.Errorf("%s: no instance on any node (see ctxos status)", what)}
	}
	members, err := c.Members(ctx)
	if err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	apis := map[string]string{}
	for _, m := range members {
		if m.State == cluster.StateAlive {
			apis[m.Name] = m.API
		}
	}
	for i := range targets {
		targets[i].api = apis[targets[i].node]
	}
	sort.Slice(targets, func(i, j int) bool {
		if targets[i].id != targets[j].id {
			return instanceLess(targets[i].id, targets[j].id)
		}
		return targets[i].node < targets[j].node
	})
	return targets, nil
}

// instanceLess orders ctx.web.2 before ctx.web.10.
func instanceLess(a, b string) bool {
	_, ia, errA := reconcile.ParseInstanceID(strings.TrimPrefix(a, "ctx."))
	_, ib, errB := reconcile.ParseInstanceID(strings.TrimPrefix(b, "ctx."))
	if errA == nil && errB == nil && ia != ib {
		return ia < ib
	}
	return a < b
}

// streamLogs prints the logs of targets: one after the other without
// follow, all at once as lines arrive with it. It fails (exit 1) only when
// no node answered.
func streamLogs(ctx context.Context, out, errOut io.Writer, targets []logTarget, follow bool, tail int) error {
	prefix := len(targets) > 1
	var mu sync.Mutex // one line at a time on out
	var failed []string
	fetch := func(t logTarget) {
		err := fetchLogs(ctx, t, follow, tail, func(line []byte) {
			mu.Lock()
			defer mu.Unlock()
			if prefix {
				fmt.Fprintf(out, "%s %s\n", t.id, line)
			} else {
				fmt.Fprintf(out, "%s\n", line)
			}
		})
		if err != nil && ctx.Err() == nil {
			mu.Lock()
			fmt.Fprintf(errOut, "node %s did not answer for %s: %v\n", t.node, t.id, err)
			failed = append(failed, t.node)
			mu.Unlock()
		}
	}
	if follow {
		var wg sync.WaitGroup
		for _, t := range targets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fetch(t)
			}()
		}
		wg.Wait()
	} else {
		for _, t := range targets {
			fetch(t)
		}
	}
	if len(failed) == len(targets) && ctx.Err() == nil {
		return &exitError{code: 1, err: fmt.Errorf("no node answered (%s)", strings.Join(failed, ", "))}
	}
	return nil
}

// fetchLogs streams one instance's logs from its node, line by line.
func fetchLogs(ctx context.Context, t logTarget, follow bool, tail int, line func([]byte)) error {
	if t.api == "" {
		return errors.New("not an alive member with an API address")
	}
	q := url.Values{}
	if follow {
		q.Set("follow", "1")
	}
	if tail >= 0 {
		q.Set("tail", strconv.Itoa(tail))
	}
	base := cluster.NewClient(t.api).Addr()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/logs/"+url.PathEscape(t.id)+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	// No overall timeout (a follow lasts), but a node that does not
	// answer at all must not hang the command.
	client := &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 10 * time.Second}}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
		}
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line(sc.Bytes())
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}
