package containerd_test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/ctxos/ctxos/drivers/containerd/containerdtest"
)

// archivePaths holds the test image archives TestMain built, by format.
var archivePaths = map[string]string{}

// busyboxArchive returns the image archive of busybox-static in format
// ("oci" layout or "docker" save), skipping tb where containerd cannot run.
func busyboxArchive(tb testing.TB, format string) string {
	tb.Helper()
	requireContainerd(tb)
	p, ok := archivePaths[format]
	if !ok {
		tb.Fatalf("no %q test archive", format)
	}
	return p
}

// archiveOf is busyboxArchive for spec literals in tests that already
// required containerd.
func archiveOf(format string) string { return archivePaths[format] }

// buildArchives writes the test image in both formats under dir.
func buildArchives(dir string) error {
	for _, format := range []string{"oci", "docker"} {
		path := filepath.Join(dir, "busybox-"+format+".tar")
		if err := containerdtest.WriteArchive(path, format); err != nil {
			return err
		}
		archivePaths[format] = path
	}
	return nil
}

// corruptArchive writes a file that starts like a tar and is cut off.
func corruptArchive(tb testing.TB) string {
	tb.Helper()
	good, err := os.ReadFile(busyboxArchive(tb, "oci"))
	if err != nil {
		tb.Fatal(err)
	}
	sum := sha256.Sum256(good)
	path := filepath.Join(tb.TempDir(), "corrupt-"+hex.EncodeToString(sum[:4])+".tar")
	if err := os.WriteFile(path, good[:len(good)/3], 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}
