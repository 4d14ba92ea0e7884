package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/ctxos/ctxos/schema"
)

// writeCtxRepo scaffolds a repository with ctxos init and adds n CTX
// files, each a process with ports, a health check and resources. With
// embedEach, every file imports and embeds schema.#Config, as init's
// sample does; without, the files are plain `package config` and only
// init's sample carries the embedding, which still closes the whole
// package for cue vet.
func writeCtxRepo(tb testing.TB, n int, embedEach bool) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "repo")
	if _, err := schema.Init(context.Background(), dir, schema.InitOptions{Module: "example.com/bench"}); err != nil {
		tb.Fatal(err)
	}
	header := "package config\n\n"
	if embedEach {
		header += "import \"github.com/ctxos/ctxos/schema\"\n\nschema.#Config\n\n"
	}
	for i := range n {
		src := header + fmt.Sprintf(`ctx: "svc-%04d": {
	command: "/usr/local/bin/svc"
	args: ["--id", "%d"]
	env: {SVC_ID: "%d", LOG_LEVEL: "info"}
	ports: http: %d
	health: http: {port: %d, path: "/healthz"}
	resources: {cpu: %d, memory: "%dMi"}
	placement: nodes: zone: "zone-%d"
	requires: ["hello"]
}
`, i, i, i, 10000+i, 10000+i, 100+i%400, 64+i%512, i%3)
		p := filepath.Join(dir, "ctx", fmt.Sprintf("svc-%04d.cue", i))
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// measurement is one run of a command: wall time and peak resident memory.
type measurement struct {
	wall   time.Duration
	maxRSS int64 // bytes
}

func measure(tb testing.TB, dir string, name string, args ...string) measurement {
	tb.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		tb.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		tb.Skip("no rusage on this platform")
	}
	return measurement{wall: wall, maxRSS: ru.Maxrss * 1024} // Linux reports KiB
}

// BenchmarkVetVersusCue runs `ctxos vet` and the official `cue vet -c`
// (same CUE version) as subprocesses on the same generated repository of
// 1000 CTX files, once per iteration each, and reports the wall time and
// peak memory of both and their ratio (goal: ctxos at or under 1.0x on
// both). ctxos runs as this test binary invoked as "ctxos" (see TestMain),
// built from the same code.
//
//	go test ./cmd/ctxos -run '^$' -bench VetVersusCue -benchtime 1x
//
// layout=embed-each is what ctxos init writes (every file embeds
// schema.#Config; cue vet's cost grows with the square of the file count
// there, so one iteration takes minutes); layout=embed-once has a single
// embedding.
func BenchmarkVetVersusCue(b *testing.B) {
	cueDir, err := buildCue(b)
	if err != nil {
		b.Skipf("no cue command to compare with: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	ctxos := filepath.Join(b.TempDir(), "ctxos")
	if err := os.Symlink(self, ctxos); err != nil {
		b.Fatal(err)
	}
	for _, layout := range []struct {
		name      string
		embedEach bool
	}{{"embed-once", false}, {"embed-each", true}} {
		b.Run("layout="+layout.name, func(b *testing.B) {
			dir := writeCtxRepo(b, 1000, layout.embedEach)
			var ours, theirs measurement
			for b.Loop() {
				o := measure(b, dir, ctxos, "vet", ".")
				c := measure(b, dir, filepath.Join(cueDir, "cue"), "vet", "-c", "./...")
				ours.wall += o.wall
				theirs.wall += c.wall
				ours.maxRSS = max(ours.maxRSS, o.maxRSS)
				theirs.maxRSS = max(theirs.maxRSS, c.maxRSS)
			}
			n := float64(b.N)
			b.ReportMetric(float64(ours.wall.Milliseconds())/n, "ctxos-ms")
			b.ReportMetric(float64(theirs.wall.Milliseconds())/n, "cue-ms")
			b.ReportMetric(float64(ours.maxRSS)/(1<<20), "ctxos-MiB")
			b.ReportMetric(float64(theirs.maxRSS)/(1<<20), "cue-MiB")
			b.ReportMetric(float64(ours.wall)/float64(theirs.wall), "wall-ratio")
			b.ReportMetric(float64(ours.maxRSS)/float64(theirs.maxRSS), "mem-ratio")
			b.ReportMetric(0, "ns/op")
		})
	}
}
