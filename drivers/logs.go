package drivers

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// RotateLog rotates path when it holds at least maxBytes: path.1…keep-1
// shift to path.2…keep, path is copied to path.1 and then truncated.
// Renaming path away would not work for a workload log: the workload (or
// containerd's shim) holds a descriptor to the file itself, opened with
// O_APPEND, and would go on writing into path.1. Copy then truncate keeps
// that descriptor valid and its next write lands at the new end; lines
// written between the copy and the truncate are lost, the usual price of
// copytruncate.
func RotateLog(path string, maxBytes int64, keep int) error {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() < maxBytes {
		return nil
	}
	os.Remove(fmt.Sprintf("%s.%d", path, keep))
	for i := keep - 1; i >= 1; i-- {
		from := fmt.Sprintf("%s.%d", path, i)
		if _, err := os.Stat(from); err == nil {
			if err := os.Rename(from, fmt.Sprintf("%s.%d", path, i+1)); err != nil {
				return err
			}
		}
	}
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := os.OpenFile(path+".1", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	if err := dst.Close(); err != nil {
		return err
	}
	return os.Truncate(path, 0)
}

// RotateLogs rotates every instance log (dir/<id>/*.log) that holds at
// least maxBytes, logging failures.
func RotateLogs(dir string, maxBytes int64, keep int, log *slog.Logger) {
	paths, err := filepath.Glob(filepath.Join(dir, "*", "*.log"))
	if err != nil {
		log.Error("list logs", "err", err)
		return
	}
	for _, p := range paths {
		if err := RotateLog(p, maxBytes, keep); err != nil {
			log.Warn("rotate log", "path", p, "err", err)
		}
	}
}

// RotateLogsEvery runs RotateLogs on dir every interval until done is
// closed; drivers run it in a goroutine of their own.
func RotateLogsEvery(done <-chan struct{}, every time.Duration, dir string, maxBytes int64, keep int, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			RotateLogs(dir, maxBytes, keep, log)
		}
	}
}
