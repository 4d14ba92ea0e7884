package gitsync

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctxos/ctxos/gitsync/internal/gittest"
)

func newSource(t *testing.T, url string) *Source {
	t.Helper()
	return &Source{URL: url, CacheDir: filepath.Join(t.TempDir(), "cache")}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestFetchCheckoutLocal(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	first := repo.Commit("first state\n\nbody", map[string]string{
		"state/ctx/web.cue": "ctx: web: replicas: 1\n",
		"state/run.sh":      "#!/bin/sh\n",
		"state/link.cue":    "",
		"README.md":         "outside the path\n",
	})
	// A relative symlink that stays inside the subtree is kept.
	if err := os.Remove(filepath.Join(repo.Dir, "state/link.cue")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("ctx/web.cue", filepath.Join(repo.Dir, "state/link.cue")); err != nil {
		t.Fatal(err)
	}
	repo.Git("add", "state/link.cue")
	repo.Git("update-index", "--chmod=+x", "state/run.sh")
	second := repo.Commit("symlink and exec bit", nil)

	src := newSource(t, repo.Dir)
	src.Path = "state"
	rev, err := src.Fetch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got, want := rev.Commit, second; got != want {
		t.Errorf("commit = %s, want %s", got, want)
	}
	if got, want := rev.Ref, "refs/heads/main"; got != want {
		t.Errorf("ref = %s, want %s", got, want)
	}
	if rev.Author != "Ada Lovelace" || rev.Email != "ada@example.com" || rev.Subject != "symlink and exec bit" || rev.Signed {
		t.Errorf("revision = %+v", rev)
	}
	if got, want := rev.Time, time.Date(2026, 1, 1, 0, 0, 2, 0, time.UTC); !got.Equal(want) {
		t.Errorf("time = %v, want %v", got, want)
	}

	dst := filepath.Join(t.TempDir(), "out")
	if err := src.Checkout(t.Context(), rev.Commit, dst); err != nil {
		t.Fatal(err)
	}
	if got, want := readFile(t, filepath.Join(dst, "ctx/web.cue")), "ctx: web: replicas: 1\n"; got != want {
		t.Errorf("web.cue = %q, want %q", got, want)
	}
	if _, err := os.Stat(filepath.Join(dst, "README.md")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("README.md outside Path was written: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dst, "run.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o755); got != want {
		t.Errorf("run.sh mode = %v, want %v", got, want)
	}
	target, err := os.Readlink(filepath.Join(dst, "link.cue"))
	if err != nil || target != "ctx/web.cue" {
		t.Errorf("link.cue -> %q, %v; want ctx/web.cue", target, err)
	}

	// A non-empty destination is refused rather than mixed; the first
	// commit is below the depth-1 fetch, so not in the cache.
	if err := src.Checkout(t.Context(), rev.Commit, dst); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("checkout into non-empty dir: %v", err)
	}
	if err := src.Checkout(t.Context(), first, t.TempDir()); !errors.Is(err, ErrCommitNotFound) {
		t.Errorf("checkout below shallow depth: err = %v, want ErrCommitNotFound", err)
	}

	// A second fetch of an unchanged remote reports the same commit; a new
	// commit is picked up.
	again, err := src.Fetch(t.Context())
	if err != nil || again.Commit != second {
		t.Fatalf("refetch = %s, %v; want %s", again.Commit, err, second)
	}
	third := repo.Commit("third", map[string]string{"state/ctx/web.cue": "ctx: web: replicas: 3\n"})
	rev3, err := src.Fetch(t.Context())
	if err != nil || rev3.Commit != third {
		t.Fatalf("fetch after push = %s, %v; want %s", rev3.Commit, err, third)
	}
	ok, err := src.IsAncestor(t.Context(), second, third)
	if err != nil || !ok {
		t.Errorf("IsAncestor(second, third) = %v, %v; want true", ok, err)
	}
}

func TestFetchRefs(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	c1 := repo.Commit("one", map[string]string{"v": "1"})
	repo.Git("tag", "v1.0.0")
	c2 := repo.Commit("two", map[string]string{"v": "2"})
	repo.Git("tag", "-a", "-m", "annotated", "v1.2.0")
	c3 := repo.Commit("three", map[string]string{"v": "3"})
	repo.Git("tag", "1.3.0") // no leading v
	c4 := repo.Commit("four", map[string]string{"v": "4"})
	repo.Git("tag", "v2.0.0-rc.1")
	repo.Git("tag", "not-a-version")
	repo.Git("checkout", "-q", "-b", "release", c2)
	c5 := repo.Commit("release fix", map[string]string{"v": "2.1"})
	repo.Git("checkout", "-q", "main")

	tests := []struct {
		name    string
		ref     Ref
		commit  string
		refName string
	}{
		{"default HEAD branch", Ref{}, c4, "refs/heads/main"},
		{"branch", Ref{Branch: "release"}, c5, "refs/heads/release"},
		{"lightweight tag", Ref{Tag: "v1.0.0"}, c1, "refs/tags/v1.0.0"},
		{"annotated tag peeled", Ref{Tag: "v1.2.0"}, c2, "refs/tags/v1.2.0"},
		{"semver range picks highest", Ref{Semver: ">=1.0.0, <2.0.0"}, c3, "refs/tags/1.3.0"},
		{"semver tilde", Ref{Semver: "~1.2"}, c2, "refs/tags/v1.2.0"},
		{"semver prerelease only when asked", Ref{Semver: ">=2.0.0-0"}, c4, "refs/tags/v2.0.0-rc.1"},
		{"pinned commit", Ref{Commit: c2}, c2, c2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := newSource(t, repo.Dir)
			src.Ref = tt.ref
			rev, err := src.Fetch(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if rev.Commit != tt.commit || rev.Ref != tt.refName {
				t.Errorf("got %s %s, want %s %s", rev.Commit, rev.Ref, tt.commit, tt.refName)
			}
			dst := t.TempDir()
			if err := src.Checkout(t.Context(), rev.Commit, dst); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFetchErrors(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	repo.Commit("one", map[string]string{"state/a.cue": "a: 1\n"})
	repo.Git("tag", "v1.0.0")
	tests := []struct {
		name string
		ref  Ref
		auth Auth
		want error
		text string
	}{
		{"missing branch", Ref{Branch: "nope"}, Auth{}, ErrRefNotFound, "branch nope"},
		{"missing tag", Ref{Tag: "v9"}, Auth{}, ErrRefNotFound, "tag v9"},
		{"no semver match", Ref{Semver: ">=2"}, Auth{}, ErrRefNotFound, ">=2"},
		{"commit not in remote", Ref{Commit: strings.Repeat("ab", 20)}, Auth{}, ErrCommitNotFound, "abab"},
		{"two refs", Ref{Branch: "main", Tag: "v1.0.0"}, Auth{}, ErrInvalidRef, "only one"},
		{"short commit", Ref{Commit: "abc123"}, Auth{}, ErrInvalidRef, "40-hex"},
		{"bad semver", Ref{Semver: "not a range"}, Auth{}, ErrInvalidRef, "not a range"},
		{"bad branch name", Ref{Branch: "a..b"}, Auth{}, ErrInvalidRef, "a..b"},
		{"credentials for local repo", Ref{}, Auth{TokenEnv: "X"}, ErrAuth, "local"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := &Source{URL: repo.Dir, CacheDir: filepath.Join(t.TempDir(), "c"), Ref: tt.ref, Auth: tt.auth}
			_, err := src.Fetch(t.Context())
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("err = %v, want %v containing %q", err, tt.want, tt.text)
			}
		})
	}
	t.Run("path outside repository", func(t *testing.T) {
		src := &Source{URL: repo.Dir, CacheDir: t.TempDir(), Path: "../etc"}
		if _, err := src.Fetch(t.Context()); err == nil || !strings.Contains(err.Error(), "../etc") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("checkout before fetch", func(t *testing.T) {
		src := newSource(t, repo.Dir)
		if err := src.Checkout(t.Context(), "main", t.TempDir()); !errors.Is(err, ErrNoCache) {
			t.Errorf("err = %v, want ErrNoCache", err)
		}
	})
}

func TestCheckoutMissingPath(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	c := repo.Commit("one", map[string]string{"state/a.cue": "a: 1\n", "file": "x"})
	for _, p := range []string{"nope", "state/deeper", "file"} {
		src := newSource(t, repo.Dir)
		src.Path = p
		if _, err := src.Fetch(t.Context()); err != nil {
			t.Fatal(err)
		}
		err := src.Checkout(t.Context(), c, t.TempDir())
		if !errors.Is(err, ErrPathNotFound) || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), c) {
			t.Errorf("path %q: err = %v, want ErrPathNotFound naming path and commit", p, err)
		}
	}
}

func TestCheckoutUnsafeTree(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		setup func(r *gittest.Repo)
		want  error
	}{
		{"symlink to absolute path", func(r *gittest.Repo) {
			os.Symlink("/etc/passwd", filepath.Join(r.Dir, "state/pw"))
			r.Git("add", "state/pw")
		}, ErrUnsafePath},
		{"symlink out of the subtree", func(r *gittest.Repo) {
			os.Symlink("../secret", filepath.Join(r.Dir, "state/up"))
			r.Git("add", "state/up")
		}, ErrUnsafePath},
		{"submodule", func(r *gittest.Repo) {
			r.Git("update-index", "--add", "--cacheinfo", "160000,"+strings.Repeat("1", 40)+",state/sub")
		}, ErrSubmodule},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			repo := gittest.NewRepo(t)
			repo.Commit("base", map[string]string{"state/a.cue": "a: 1\n", "secret": "s"})
			tt.setup(repo)
			c := repo.Commit("unsafe", nil)
			src := newSource(t, repo.Dir)
			src.Path = "state"
			if _, err := src.Fetch(t.Context()); err != nil {
				t.Fatal(err)
			}
			if err := src.Checkout(t.Context(), c, t.TempDir()); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestDeletedBranchKeepsCache(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	repo.Commit("base", map[string]string{"a": "1"})
	repo.Git("checkout", "-q", "-b", "feature")
	feature := repo.Commit("feature", map[string]string{"a": "2"})
	repo.Git("checkout", "-q", "main")

	src := newSource(t, repo.Dir)
	src.Ref = Ref{Branch: "feature"}
	if _, err := src.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	repo.Git("branch", "-q", "-D", "feature")
	_, err := src.Fetch(t.Context())
	if !errors.Is(err, ErrRefNotFound) || !strings.Contains(err.Error(), "branch feature") {
		t.Fatalf("err = %v, want ErrRefNotFound naming branch feature", err)
	}
	// The cache still has the last commit, by name and by hash.
	got, err := src.Resolve(t.Context(), "feature")
	if err != nil || got != feature {
		t.Errorf("Resolve(feature) = %s, %v; want %s", got, err, feature)
	}
	if err := src.Checkout(t.Context(), feature, t.TempDir()); err != nil {
		t.Errorf("checkout last commit: %v", err)
	}
}

func TestForcePushFollowed(t *testing.T) {
	t.Parallel()
	for _, depth := range []int{-1, 0} {
		repo := gittest.NewRepo(t)
		base := repo.Commit("base", map[string]string{"a": "1"})
		old := repo.Commit("old", map[string]string{"a": "2"})
		src := newSource(t, repo.Dir)
		src.Depth = depth
		if _, err := src.Fetch(t.Context()); err != nil {
			t.Fatal(err)
		}
		// History rewritten: main reset to base and a different commit on top.
		repo.Git("reset", "-q", "--hard", base)
		rewritten := repo.Commit("rewritten", map[string]string{"a": "3"})
		rev, err := src.Fetch(t.Context())
		if err != nil || rev.Commit != rewritten {
			t.Fatalf("depth %d: fetch after force push = %s, %v; want %s", depth, rev.Commit, err, rewritten)
		}
		// A shallow cache is deepened to answer.
		if ok, err := src.IsAncestor(t.Context(), old, rewritten); ok || err != nil {
			t.Errorf("depth %d: IsAncestor(old, rewritten) = %v, %v; want false, nil", depth, ok, err)
		}
		// Reset to an older commit: followed, and old is not an ancestor.
		repo.Git("reset", "-q", "--hard", base)
		rev, err = src.Fetch(t.Context())
		if err != nil || rev.Commit != base {
			t.Fatalf("depth %d: fetch after reset = %s, %v; want %s", depth, rev.Commit, err, base)
		}
		if ok, err := src.IsAncestor(t.Context(), rewritten, base); ok || err != nil {
			t.Errorf("depth %d: IsAncestor(rewritten, base) = %v, %v; want false, nil", depth, ok, err)
		}
		if ok, err := src.IsAncestor(t.Context(), base, rewritten); !ok || err != nil {
			t.Errorf("depth %d: IsAncestor(base, rewritten) = %v, %v; want true", depth, ok, err)
		}
	}
}

func TestShallowFetchAcrossPushes(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	var commits []string
	for i := range 5 {
		commits = append(commits, repo.Commit("c", map[string]string{"n": strings.Repeat("x", i+1)}))
	}
	srv := gittest.HTTPServer(t, filepath.Dir(repo.Dir), "", "")
	src := newSource(t, srv.URL+"/repo")
	if _, err := src.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Depth 1: only the tip is in the cache.
	if _, err := src.Resolve(t.Context(), commits[3]); err == nil {
		t.Errorf("commit below the shallow tip resolved")
	}
	for i := range 3 {
		want := repo.Commit("more", map[string]string{"m": strings.Repeat("y", i+1)})
		rev, err := src.Fetch(t.Context())
		if err != nil || rev.Commit != want {
			t.Fatalf("fetch %d = %s, %v; want %s", i, rev.Commit, err, want)
		}
		if err := src.Checkout(t.Context(), want, t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	// One push at a time, each fetched tip's parent is the previous tip,
	// so the chain in the cache is whole.
	if ok, err := src.IsAncestor(t.Context(), commits[4], "HEAD"); !ok || err != nil {
		t.Errorf("IsAncestor(first tip, HEAD) = %v, %v; want true", ok, err)
	}
	// Two pushes between fetches leave a gap in the cache: IsAncestor
	// deepens the cache to see across it.
	repo.Commit("gap", map[string]string{"g": "1"})
	repo.Commit("after gap", map[string]string{"g": "2"})
	tip, err := src.Fetch(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := src.IsAncestor(t.Context(), commits[4], tip.Commit); !ok || err != nil {
		t.Errorf("IsAncestor over a shallow gap = %v, %v; want true", ok, err)
	}
	if err := src.Checkout(t.Context(), tip.Commit, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	// A gap deeper than the deepening: the answer stays unknown.
	deepTip := repo.FastCommits(deepenDepth + 2)
	deep, err := src.Fetch(t.Context())
	if err != nil || deep.Commit != deepTip {
		t.Fatalf("fetch = %s, %v; want %s", deep.Commit, err, deepTip)
	}
	if ok, err := src.IsAncestor(t.Context(), commits[0], deep.Commit); ok || !errors.Is(err, ErrShallowHistory) {
		t.Errorf("IsAncestor across more than deepenDepth = %v, %v; want false, ErrShallowHistory", ok, err)
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	c1 := repo.Commit("one", map[string]string{"a": "1"})
	repo.Git("tag", "-a", "-m", "t", "v1")
	c2 := repo.Commit("two", map[string]string{"a": "2"})
	src := newSource(t, repo.Dir)
	src.Depth = -1
	if _, err := src.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Only in the local repository, not yet fetched.
	repo.Git("checkout", "-q", "-b", "wip")
	c3 := repo.Commit("wip", map[string]string{"a": "3"})
	tests := []struct{ rev, want string }{
		// The local repository is asked first: its HEAD is on wip.
		{"main", c2}, {"HEAD~1", c2}, {"main^", c1}, {"v1", c1}, {c1, c1}, {c2[:12], c2}, {"wip", c3},
	}
	for _, tt := range tests {
		got, err := src.Resolve(t.Context(), tt.rev)
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%q) = %s, %v; want %s", tt.rev, got, err, tt.want)
		}
	}
	if _, err := src.Resolve(t.Context(), "no-such-rev"); !errors.Is(err, ErrCommitNotFound) {
		t.Errorf("Resolve(no-such-rev) err = %v", err)
	}
	// A remote source resolves in the cache only.
	srv := gittest.HTTPServer(t, filepath.Dir(repo.Dir), "", "")
	remote := newSource(t, srv.URL+"/repo")
	remote.Depth = -1
	if _, err := remote.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, err := remote.Resolve(t.Context(), "HEAD~1"); err != nil || got != c2 {
		t.Errorf("remote Resolve(HEAD~1) = %s, %v; want %s (the cache HEAD follows the remote HEAD, wip)", got, err, c2)
	}
}

func TestPinnedCommitOffline(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	c1 := repo.Commit("one", map[string]string{"a": "1"})
	c2 := repo.Commit("two", map[string]string{"a": "2"})
	srv := gittest.HTTPServer(t, filepath.Dir(repo.Dir), "", "")
	src := newSource(t, srv.URL+"/repo")
	shallowFile := filepath.Join(src.CacheDir, "shallow")
	if _, err := src.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Pinning the commit the shallow cache already holds needs nothing more.
	src.Ref = Ref{Commit: c2}
	if rev, err := src.Fetch(t.Context()); err != nil || rev.Commit != c2 {
		t.Fatalf("pin to cached tip = %s, %v", rev.Commit, err)
	}
	if _, err := os.Stat(shallowFile); err != nil {
		t.Errorf("cache was rebuilt for a cached pinned commit: %v", err)
	}
	// Pinning an older commit rebuilds the cache with full history.
	src.Ref = Ref{Commit: c1}
	rev, err := src.Fetch(t.Context())
	if err != nil || rev.Commit != c1 {
		t.Fatalf("pinned fetch = %s, %v; want %s", rev.Commit, err, c1)
	}
	if _, err := os.Stat(shallowFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cache still shallow after a full rebuild: %v", err)
	}
	srv.Close()
	// Pinned and cached: no remote needed.
	rev, err = src.Fetch(t.Context())
	if err != nil || rev.Commit != c1 {
		t.Fatalf("pinned fetch with remote down = %s, %v; want %s", rev.Commit, err, c1)
	}
}

func TestUnreachableRemoteKeepsLastGood(t *testing.T) {
	t.Parallel()
	repo := gittest.NewRepo(t)
	c := repo.Commit("one", map[string]string{"state/a.cue": "a: 1\n"})
	srv := gittest.HTTPServer(t, filepath.Dir(repo.Dir), "", "")
	src := newSource(t, srv.URL+"/repo")
	src.Path = "state"
	if _, err := src.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv.Close() // the port is now closed

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := src.Fetch(ctx)
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	dst := t.TempDir()
	if err := src.Checkout(t.Context(), c, dst); err != nil {
		t.Fatalf("last good checkout: %v", err)
	}
	if got := readFile(t, filepath.Join(dst, "a.cue")); got != "a: 1\n" {
		t.Errorf("a.cue = %q", got)
	}

	// A remote that accepts but never answers is cut by the deadline.
	hang := hangingListener(t)
	slow := newSource(t, "http://"+hang+"/repo")
	ctx, cancel = context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := slow.Fetch(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hanging remote: err = %v, want DeadlineExceeded", err)
	}
}
