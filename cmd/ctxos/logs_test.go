package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/reconcile"
)

func TestTailOffset(t *testing.T) {
	tests := []struct {
		name    string
		content string
		n       int
		want    string // what follows the offset
	}{
		{"last two", "a\nb\nc\n", 2, "b\nc\n"},
		{"more than there are", "a\nb\n", 5, "a\nb\n"},
		{"zero", "a\nb\n", 0, ""},
		{"unterminated last line", "a\nb\nc", 2, "b\nc"},
		{"one", "a\nb\nc\n", 1, "c\n"},
		{"empty file", "", 3, ""},
		{"empty lines count", "a\n\n\n", 2, "\n\n"},
		{"long file", strings.Repeat("x\n", 50000) + "end\n", 2, "x\nend\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "log")
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			off, err := tailOffset(p, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.content[off:]; got != tt.want {
				t.Fatalf("tail %d = %q, want %q", tt.n, got, tt.want)
			}
		})
	}
	if _, err := tailOffset(filepath.Join(t.TempDir(), "missing"), 1); err == nil {
		t.Error("tailOffset of a missing file: no error")
	}
}

// TestLogFileFollowsTruncation appends, rotates by truncation and appends
// again: every whole line is read once, a partial line waits for its end.
func TestLogFileFollowsTruncation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "output.log")
	appendTo := func(s string) {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	lf := &logFile{path: p}
	var out bytes.Buffer
	steps := []struct {
		do   func()
		want string
	}{
		{func() {}, ""}, // missing file: nothing yet
		{func() { appendTo("one\ntw") }, "one\n"},
		{func() { appendTo("o\n") }, "one\ntwo\n"},
		{func() { os.Truncate(p, 0); appendTo("3\n") }, "one\ntwo\n3\n"},
	}
	for i, s := range steps {
		s.do()
		if err := lf.copyTo(&out, false); err != nil {
			t.Fatal(err)
		}
		if got := out.String(); got != s.want {
			t.Fatalf("step %d: read %q, want %q", i, got, s.want)
		}
	}
	appendTo("partial")
	if err := lf.copyTo(&out, true); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "one\ntwo\n3\npartial\n"; got != want {
		t.Fatalf("final read %q, want %q", got, want)
	}
}

func TestParseLogsArg(t *testing.T) {
	tests := []struct {
		arg     string
		name    string
		index   int
		wantErr string
	}{
		{"web", "web", -1, ""},
		{"web/2", "web", 2, ""},
		{"web/x", "", 0, `INDEX "x" is not a number`},
		{"web/-1", "", 0, `INDEX "-1"`},
		{"/1", "", 0, "want CTX or CTX/INDEX"},
	}
	for _, tt := range tests {
		name, index, err := parseLogsArg(tt.arg)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseLogsArg(%q) err = %v, want %q", tt.arg, err, tt.wantErr)
			}
			continue
		}
		if err != nil || name != tt.name || index != tt.index {
			t.Errorf("parseLogsArg(%q) = %q, %d, %v; want %q, %d", tt.arg, name, index, err, tt.name, tt.index)
		}
	}
}

// TestLogsCommand runs an agent in-process on a dev-mode directory with a
// two-instance process CTX that prints, and reads its logs through the
// CLI: all instances prefixed, one instance, --tail, -f, and the errors.
func TestLogsCommand(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "ctx"), 0o755); err != nil {
		t.Fatal(err)
	}
	cue := `ctx: lg: {command: "/bin/sh", args: ["-c", "echo first $CTXOS_INSTANCE; echo second $CTXOS_INSTANCE >&2; exec sleep 1000"], replicas: 2}
ctx: none: {command: "/bin/sleep", args: ["1000"], replicas: 0}
`
	if err := os.WriteFile(filepath.Join(dir, "ctx", "lg.cue"), []byte(cue), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := agentConfig{name: "local", dataDir: t.TempDir(), api: "127.0.0.1:0", bind: "127.0.0.1:0", profile: "local",
		statusEvery: time.Second, logLevel: "warn", logOutput: &syncBuffer{},
		git: gitConfig{repo: dir, dev: true}}
	a, err := startAgent(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
		defer scancel()
		if _, err := a.stopWorkloads(sctx); err != nil {
			t.Errorf("stop workloads: %v", err)
		}
		a.stop()
	})
	api := strings.TrimPrefix(a.apiURL, "http://")
	client := cluster.NewClient(api)
	waitUntil(t, 60*time.Second, "2 instances of lg print", func() bool {
		var insts map[string]reconcile.InstanceStatus
		if err := client.Do(ctx, "GET", "/v1/kv/run/local/instances", nil, &struct {
			Value *map[string]reconcile.InstanceStatus `json:"value"`
		}{&insts}); err != nil || len(insts) != 2 {
			return false
		}
		for _, id := range []string{"ctx.lg.0", "ctx.lg.1"} {
			out, errOut := a.drivers["process"].(interface{ LogPaths(string) (string, string) }).LogPaths(id)
			bo, _ := os.ReadFile(out)
			be, _ := os.ReadFile(errOut)
			if !strings.Contains(string(bo), "first") || !strings.Contains(string(be), "second") {
				return false
			}
		}
		return true
	})

	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     []string // lines of stdout, in order
		wantErr  string
	}{
		{"all instances, prefixed", []string{"logs", "lg"}, 0, []string{
			"ctx.lg.0 first ctx.lg.0", "ctx.lg.0 second ctx.lg.0", "ctx.lg.1 first ctx.lg.1", "ctx.lg.1 second ctx.lg.1"}, ""},
		{"one instance", []string{"logs", "lg/1"}, 0, []string{"first ctx.lg.1", "second ctx.lg.1"}, ""},
		{"tail", []string{"logs", "lg/0", "--tail", "0"}, 0, nil, ""},
		{"unknown ctx", []string{"logs", "nope"}, 1, nil, "ctx nope is not in the desired state"},
		{"no instance", []string{"logs", "none"}, 1, nil, "ctx none: no instance on any node"},
		{"no such index", []string{"logs", "lg/7"}, 1, nil, "instance ctx.lg.7 of ctx lg: no instance"},
		{"bad index", []string{"logs", "lg/x"}, 2, nil, `INDEX "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runCLI(t, append(tt.args, "--api", api)...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr %s", code, tt.wantCode, errOut)
			}
			var got []string
			if s := strings.TrimSpace(out); s != "" {
				got = strings.Split(s, "\n")
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("stdout %q, want %q", got, tt.want)
			}
			if tt.wantErr != "" && !strings.Contains(errOut, tt.wantErr) {
				t.Errorf("stderr %q, want %q in it", errOut, tt.wantErr)
			}
		})
	}

	t.Run("follow", func(t *testing.T) {
		fctx, fcancel := context.WithCancel(ctx)
		defer fcancel()
		out := &syncBuffer{}
		done := make(chan error, 1)
		go func() {
			targets, err := findLogTargets(fctx, client, "lg", 0)
			if err != nil {
				done <- err
				return
			}
			done <- streamLogs(fctx, out, out, targets, true, 1)
		}()
		waitUntil(t, 30*time.Second, "the last line", func() bool { return strings.Contains(out.String(), "first ctx.lg.0") })
		stdout, _ := a.drivers["process"].(interface{ LogPaths(string) (string, string) }).LogPaths("ctx.lg.0")
		f, err := os.OpenFile(stdout, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("appended\n")
		f.Close()
		waitUntil(t, 30*time.Second, "the appended line", func() bool { return strings.Contains(out.String(), "appended\n") })
		// Rotation by truncation: the next lines are read from the start.
		if err := os.Truncate(stdout, 0); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(stdout, []byte("after rotation\n"), 0o640)
		waitUntil(t, 30*time.Second, "the line after rotation", func() bool { return strings.Contains(out.String(), "after rotation\n") })
		fcancel()
		if err := <-done; err != nil {
			t.Fatalf("streamLogs: %v", err)
		}
		if strings.Contains(out.String(), "ctx.lg.0 ") {
			t.Errorf("one instance shown, yet lines are prefixed: %q", out)
		}
	})

	t.Run("a node that does not answer", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := ln.Addr().String()
		ln.Close()
		targets := []logTarget{{node: "local", id: "ctx.lg.0", api: api}, {node: "gone", id: "ctx.lg.1", api: dead}}
		var out, errOut bytes.Buffer
		if err := streamLogs(ctx, &out, &errOut, targets, false, -1); err != nil {
			t.Fatalf("streamLogs = %v, want nil when one node answered", err)
		}
		if !strings.Contains(out.String(), "ctx.lg.0 second ctx.lg.0") {
			t.Errorf("stdout %q lacks the answering node's lines", out.String())
		}
		if !strings.Contains(errOut.String(), "node gone did not answer for ctx.lg.1") {
			t.Errorf("stderr %q does not name the node that did not answer", errOut.String())
		}
		err = streamLogs(ctx, &out, &errOut, targets[1:], false, -1)
		var ee *exitError
		if !errors.As(err, &ee) || ee.code != 1 {
			t.Fatalf("streamLogs with no node answering = %v, want exit 1", err)
		}
	})
}
