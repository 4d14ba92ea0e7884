package gitsync

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/ctxos/ctxos/gitsync/internal/gittest"
)

// BenchmarkShallowFetch compares a depth-1 Fetch of a 10 000-commit
// repository into an empty cache with `git fetch --depth 1` of the same
// repository, both over smart HTTP (git http-backend) and from a local path.
// The gitsync side includes creating the cache repository; the git side
// does not time its `git init`, which costs a process start.
//
//	go test ./gitsync -run '^$' -bench ShallowFetch -benchtime 20x
func BenchmarkShallowFetch(b *testing.B) {
	root := b.TempDir()
	bare := filepath.Join(root, "big.git")
	gittest.FastImport(b, bare, 10_000)
	srv := gittest.HTTPServer(b, root, "", "")
	for _, remote := range []struct{ name, url string }{
		{"http", srv.URL + "/big.git"},
		{"file", bare},
	} {
		b.Run(remote.name+"/gitsync", func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				cache := filepath.Join(b.TempDir(), "cache")
				b.StartTimer()
				src := &Source{URL: remote.url, CacheDir: cache}
				if _, err := src.Fetch(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(remote.name+"/git-cli", func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				dir := filepath.Join(b.TempDir(), "clone.git")
				gittest.Git(b, "", "init", "-q", "--bare", dir)
				b.StartTimer()
				gittest.Git(b, dir, "fetch", "-q", "--depth", "1", remote.url, "+refs/heads/main:refs/heads/main")
			}
		})
	}
}

// BenchmarkPollUnchanged is the steady-state cost of a poll: the remote has
// not moved, so Fetch lists refs and fetches nothing.
//
//	go test ./gitsync -run '^$' -bench PollUnchanged
func BenchmarkPollUnchanged(b *testing.B) {
	root := b.TempDir()
	bare := filepath.Join(root, "big.git")
	gittest.FastImport(b, bare, 10_000)
	srv := gittest.HTTPServer(b, root, "", "")
	src := &Source{URL: srv.URL + "/big.git", CacheDir: filepath.Join(b.TempDir(), "cache")}
	if _, err := src.Fetch(context.Background()); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := src.Fetch(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(src.CacheDir, "shallow")); err != nil {
		b.Errorf("cache is not shallow: %v", err)
	}
}
