package gitsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DirTree is a plain directory, not a Git repository, as a syncer's Tree:
// `ctxos up` on a directory runs in dev mode, and every save is synced.
// Its "commit" is "worktree:" and a hash of the .cue files, so an
// unchanged directory is not published twice and other files (logs, a data
// dir) do not count.
type DirTree struct {
	Dir string
}

// hashedFile limits what a worktree hash reads; the schema loader refuses
// larger files with its own message.
const hashedFile = 16 << 20

func (d *DirTree) Fetch(ctx context.Context) (Revision, error) {
	h := sha256.New()
	var newest time.Time
	var paths []string
	err := filepath.WalkDir(d.Dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() && p != d.Dir && strings.HasPrefix(e.Name(), ".") {
			return filepath.SkipDir
		}
		// Only what the schema loader reads counts: logs or a data dir
		// kept inside the directory must not look like new commits.
		if (e.Type().IsRegular() || e.Type()&fs.ModeSymlink != 0) && strings.HasSuffix(e.Name(), ".cue") {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return Revision{}, fmt.Errorf("read %s: %w", d.Dir, err)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if ctx.Err() != nil {
			return Revision{}, ctx.Err()
		}
		info, err := os.Lstat(p)
		if err != nil {
			return Revision{}, err
		}
		if info.ModTime().After(newest) {
			newest = info.ModTime()
		}
		rel, _ := filepath.Rel(d.Dir, p)
		fmt.Fprintf(h, "%s\x00%d\x00", rel, info.Mode())
		if info.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			io.WriteString(h, target)
			continue
		}
		f, err := os.Open(p)
		if err != nil {
			return Revision{}, err
		}
		_, err = io.Copy(h, io.LimitReader(f, hashedFile))
		f.Close()
		if err != nil {
			return Revision{}, err
		}
	}
	return Revision{
		Commit:  "worktree:" + hex.EncodeToString(h.Sum(nil))[:16],
		Ref:     d.Dir,
		Author:  "working tree",
		Subject: "files in " + d.Dir,
		Time:    newest,
	}, nil
}

func (d *DirTree) Open(ctx context.Context, commit string) (string, func(), error) {
	return d.Dir, func() {}, nil
}

// Watch calls fire (with a short debounce, so an editor's save of several
// files is one sync) whenever a file under the directory changes, until
// ctx ends.
func (d *DirTree) Watch(ctx context.Context, fire func(reason string), log *slog.Logger) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", d.Dir, err)
	}
	addAll := func() {
		filepath.WalkDir(d.Dir, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				if p != d.Dir && strings.HasPrefix(e.Name(), ".") {
					return filepath.SkipDir
				}
				w.Add(p)
			}
			return nil
		})
	}
	addAll()
	go func() {
		defer w.Close()
		var debounce <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if ev.Has(fsnotify.Create) {
					addAll() // a new directory needs its own watch
				}
				if strings.HasSuffix(ev.Name, ".cue") || ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
					debounce = time.After(100 * time.Millisecond)
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				if log != nil {
					log.Warn("file watch", "dir", d.Dir, "err", err)
				}
			case <-debounce:
				debounce = nil
				fire("file changed")
			}
		}
	}()
	return nil
}
