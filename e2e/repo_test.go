//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Repo is the desired-state repository of a cluster: a bare repository
// the syncing agent follows by path, and a working clone the test edits,
// commits and pushes with the git command, as a user does.
type Repo struct {
	t      testing.TB
	Bare   string
	Work   string
	Marker string
	// commits counts commits, to give each a distinct fixed time: hashes
	// then only depend on the content.
	commits int
}

// newRepo creates the bare repository and its clone, with a first commit
// of the sys settings and the CTXs ctxs (name → replicas) pushed to main.
func newRepo(t testing.TB, ctxs map[string]int) *Repo {
	t.Helper()
	dir := t.TempDir()
	r := &Repo{t: t, Bare: filepath.Join(dir, "desired.git"), Work: filepath.Join(dir, "work"), Marker: newMarker(t)}
	r.git(dir, "init", "--quiet", "--bare", "-b", "main", r.Bare)
	r.git(dir, "init", "--quiet", "-b", "main", r.Work)
	r.Git("remote", "add", "origin", r.Bare)
	r.Write(r.files(ctxs))
	r.Commit("first desired state")
	r.Push("main")
	return r
}

func (r *Repo) git(dir string, args ...string) string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	when := fmt.Sprintf("2025-01-01T00:%02d:00Z", r.commits%60)
	env := []string{
		"GIT_AUTHOR_NAME=e2e", "GIT_AUTHOR_EMAIL=e2e@ctxos.test",
		"GIT_COMMITTER_NAME=e2e", "GIT_COMMITTER_EMAIL=e2e@ctxos.test",
		"GIT_AUTHOR_DATE=" + when, "GIT_COMMITTER_DATE=" + when,
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
	}
	out, errOut, code := runCmd(ctx, dir, env, "git", args...)
	if code != 0 {
		r.t.Fatalf("git %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return strings.TrimSpace(out)
}

// Git runs git in the working clone.
func (r *Repo) Git(args ...string) string {
	r.t.Helper()
	return r.git(r.Work, args...)
}

// Write writes files (path relative to the repository root → content);
// an empty content removes the file.
func (r *Repo) Write(files map[string]string) {
	r.t.Helper()
	for p, content := range files {
		full := filepath.Join(r.Work, p)
		if content == "" {
			if err := os.Remove(full); err != nil {
				r.t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
}

// Commit commits everything in the working tree and returns the hash.
func (r *Repo) Commit(msg string) string {
	r.t.Helper()
	r.Git("add", "-A")
	r.commits++
	r.Git("commit", "--quiet", "-m", msg)
	return r.Git("rev-parse", "HEAD")
}

// Push pushes branch to the bare repository.
func (r *Repo) Push(branch string) {
	r.t.Helper()
	r.Git("push", "--quiet", "--force", "origin", branch)
}

// sleepCTX is the CUE file of a process CTX running /bin/sleep with the
// repository's marker, spread over the hosts.
func (r *Repo) sleepCTX(name string, replicas int) string {
	return fmt.Sprintf(`package config

ctx: %s: {
	command: "/bin/sleep"
	args: [%q]
	replicas: %d
	resources: {
		cpu:    10
		memory: "16Mi"
	}
	placement: strategy: "spread"
	stop: grace: "2s"
}
`, name, r.Marker, replicas)
}

// files is a repository with the sys settings and the given CTXs.
func (r *Repo) files(ctxs map[string]int) map[string]string {
	files := map[string]string{
		"sys/sys.cue": "package config\n\nsys: sync: interval: \"2s\"\n",
	}
	for name, n := range ctxs {
		files["ctx/"+name+".cue"] = r.sleepCTX(name, n)
	}
	return files
}
