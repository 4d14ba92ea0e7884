package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets testscript run ctxos in-process: the test binary, invoked
// as "ctxos", runs the CLI and exits with its code.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"ctxos": func() { os.Exit(run(os.Args[1:])) },
	})
}

// TestScripts runs testdata/script/*.txtar. Set CTXOS_UPDATE_SCRIPTS=1 to
// rewrite the golden files inside the archives from what ctxos prints.
func TestScripts(t *testing.T) {
	cueDir, cueErr := buildCue(t)
	testscript.Run(t, testscript.Params{
		Dir:           "testdata/script",
		UpdateScripts: os.Getenv("CTXOS_UPDATE_SCRIPTS") != "",
		Setup: func(env *testscript.Env) error {
			if cueDir != "" {
				env.Setenv("PATH", cueDir+string(os.PathListSeparator)+env.Getenv("PATH"))
			}
			return nil
		},
		Condition: func(cond string) (bool, error) {
			if cond == "cue" {
				if cueErr != nil {
					t.Logf("no cue command, skipping its checks: %v", cueErr)
				}
				return cueErr == nil, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exits":   cmdExits,
			"bigfile": cmdBigfile,
			"latin1":  cmdLatin1,
		},
	})
}

// cmdExits runs a command and checks its exit code: exits CODE CMD [ARGS...].
// Its stdout and stderr are then checked like exec's.
func cmdExits(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exits CODE COMMAND [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exits: code %q: %v", args[0], err)
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("exits: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with %d, want %d", args[1], got, want)
	}
}

// cmdBigfile writes a CUE file of the given size: bigfile FILE BYTES.
func cmdBigfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: bigfile FILE BYTES")
	}
	n, err := strconv.Atoi(args[1])
	if err != nil || n < 4 {
		ts.Fatalf("bigfile: bad size %q", args[1])
	}
	b := append([]byte("// "), bytes.Repeat([]byte("x"), n-4)...)
	b = append(b, '\n')
	p := ts.MkAbs(args[0])
	ts.Check(os.MkdirAll(filepath.Dir(p), 0o755))
	ts.Check(os.WriteFile(p, b, 0o644))
}

// cmdLatin1 writes TEXT encoded as ISO 8859-1, which is not UTF-8 once it
// has a non-ASCII letter: latin1 FILE TEXT.
func cmdLatin1(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: latin1 FILE TEXT")
	}
	var b []byte
	for _, r := range strings.ReplaceAll(args[1], `\n`, "\n") {
		if r > 0xff {
			ts.Fatalf("latin1: %q has no ISO 8859-1 encoding", r)
		}
		b = append(b, byte(r))
	}
	p := ts.MkAbs(args[0])
	ts.Check(os.MkdirAll(filepath.Dir(p), 0o755))
	ts.Check(os.WriteFile(p, b, 0o644))
}

// buildCue installs the official cue command, at the cuelang.org/go version
// ctxos is built with, into a temporary directory and returns it. It uses
// `go install module@version` rather than `go build` inside this module,
// because the cue command needs modules this module does not require.
func buildCue(t testing.TB) (string, error) {
	// The version this module requires, so that both evaluate alike.
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "cuelang.org/go").Output()
	if err != nil {
		return "", fmt.Errorf("go list -m cuelang.org/go: %w", err)
	}
	version := strings.TrimSpace(string(out))
	dir := t.TempDir()
	cmd := exec.Command("go", "install", "cuelang.org/go/cmd/cue@"+version)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install cuelang.org/go/cmd/cue@%s: %v\n%s", version, err, out)
	}
	return dir, nil
}
