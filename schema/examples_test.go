package schema

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestExamples: every repository under examples/ is valid.
func TestExamples(t *testing.T) {
	t.Parallel()
	dirs, err := filepath.Glob("../examples/*")
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) < 2 {
		t.Fatalf("found %d examples, want hello and web at least", len(dirs))
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			snap, diags := load(t, dir)
			if snap == nil {
				t.Fatalf("invalid: %v", diags)
			}
		})
	}
	snap, _ := load(t, "../examples/web")
	ctxs, err := snap.Ctxs()
	if err != nil {
		t.Fatal(err)
	}
	mids, err := snap.Mids()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ctxs["web"].Replicas, 3; got != want {
		t.Errorf("web replicas = %d, want %d", got, want)
	}
	if got, want := ctxs["web"].Runtime, RuntimeContainerd; got != want {
		t.Errorf("web runtime = %q, want %q", got, want)
	}
	if !mids["heartbeat"].Nodes.All || mids["heartbeat"].Driver != "process" {
		t.Errorf("heartbeat = %+v, want a process MID on every node", mids["heartbeat"])
	}
	snap, _ = load(t, "../examples/hello")
	ctxs, err = snap.Ctxs()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ctxs["hello"].Runtime, RuntimeProcess; got != want {
		t.Errorf("hello runtime = %q, want %q", got, want)
	}
}

func TestInit(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "My Infra")
	written, err := Init(context.Background(), dir, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(written[:3], " "), "README.md ctx/hello.cue cue.mod/module.cue"; got != want {
		t.Errorf("written = %q, want %q first", got, want)
	}
	mod, err := os.ReadFile(filepath.Join(dir, "cue.mod", "module.cue"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mod), `module: "example.com/my-infra"`) {
		t.Errorf("module.cue = %s, want the module example.com/my-infra", mod)
	}
	// The vendored schema is the embedded one, byte for byte.
	for _, name := range []string{"config.cue", "ctx.cue", "mid.cue", "ztb.cue", "sys.cue"} {
		got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(VendorDir), name))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := Files.ReadFile(name)
		if string(got) != string(want) {
			t.Errorf("vendored %s differs from the embedded schema", name)
		}
	}
	snap, diags := load(t, dir)
	if snap == nil {
		t.Fatalf("scaffold is invalid: %v", diags)
	}

	if _, err := Init(context.Background(), dir, InitOptions{}); !errors.Is(err, ErrNotEmpty) {
		t.Errorf("Init over a scaffold: err = %v, want %v", err, ErrNotEmpty)
	}
	if _, err := Init(context.Background(), t.TempDir(), InitOptions{Name: "Web"}); err == nil || !strings.Contains(err.Error(), `"Web"`) {
		t.Errorf("Init with name Web: err = %v, want one naming it", err)
	}
}

// TestCueVet: the official cue command of the same version accepts the
// schema and the examples, which import the schema from this repository's
// CUE module.
func TestCueVet(t *testing.T) {
	t.Parallel()
	cue := buildCue(t)
	cmd := exec.Command(cue, "vet", "-c", "./schema/", "./examples/...")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cue vet: %v\n%s", err, out)
	}
}

// buildCue installs the official cue command, at the cuelang.org/go version
// this package is built with, and returns its path; it skips the test when
// that is impossible (no network and an empty module cache). It uses
// `go install module@version` because the cue command needs modules that
// this module does not require.
func buildCue(tb testing.TB) string {
	tb.Helper()
	// The version this module requires, so that both evaluate alike.
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "cuelang.org/go").Output()
	if err != nil {
		tb.Skipf("go list -m cuelang.org/go: %v", err)
	}
	version := strings.TrimSpace(string(out))
	dir := tb.TempDir()
	cmd := exec.Command("go", "install", "cuelang.org/go/cmd/cue@"+version)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Skipf("cannot build cue %s, skipping: %v\n%s", version, err, out)
	}
	return filepath.Join(dir, "cue")
}
