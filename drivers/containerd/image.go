package containerd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"

	"github.com/ctxos/ctxos/drivers"
)

// Image reference forms besides a registry reference.
const (
	prefixOCIArchive    = "oci-archive:"
	prefixDockerArchive = "docker-archive:"
)

// parseImage splits an image reference into its source ("oci-archive",
// "docker-archive" or "registry") and the path or normalized reference.
func parseImage(ref string) (source, value string, err error) {
	for _, p := range []string{prefixOCIArchive, prefixDockerArchive} {
		if path, ok := strings.CutPrefix(ref, p); ok {
			if !filepath.IsAbs(path) {
				return "", "", fmt.Errorf("%q: the archive path must be absolute", ref)
			}
			return strings.TrimSuffix(p, ":"), filepath.Clean(path), nil
		}
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", "", fmt.Errorf("%q is not an image reference: %v", ref, err)
	}
	return "registry", reference.TagNameOnly(named).String(), nil
}

// archiveImageName names an imported archive in the image store by its path,
// size and modification time, so an unchanged archive is imported once and
// a rewritten one again.
func archiveImageName(source, path string, fi os.FileInfo) string {
	key := fmt.Sprintf("%s\x00%s\x00%d\x00%d", source, path, fi.Size(), fi.ModTime().UnixNano())
	sum := sha256.Sum256([]byte(key))
	base := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r + ('a' - 'A')
		}
		return '-'
	}, filepath.Base(path))
	return "import.ctxos.local/" + source + "/" + strings.Trim(base, ".-_") + ":" + hex.EncodeToString(sum[:8])
}

// image returns spec's image, importing or pulling it when the store does
// not have it yet, unpacked into snapshotter snap. The caller holds
// d.images shared. Errors wrap ErrImage and name the instance and image.
func (d *Driver) image(ctx context.Context, spec drivers.Spec, snap string) (containerd.Image, error) {
	source, value, err := parseImage(spec.Image)
	if err != nil {
		return nil, fmt.Errorf("%w: instance %q: image: %v", ErrImage, spec.ID, err)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: instance %q: image %s: %s", ErrImage, spec.ID, spec.Image, fmt.Sprintf(format, args...))
	}
	name := value
	if source != "registry" {
		fi, err := os.Stat(value)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fail("archive %s does not exist", value)
			}
			return nil, fail("%v", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fail("archive %s is not a regular file", value)
		}
		name = archiveImageName(source, value, fi)
	}

	// One fetch per image at a time: replicas created in parallel share it.
	unlock := d.lockImage(name)
	defer unlock()
	img, err := d.client.GetImage(ctx, name)
	switch {
	case err == nil:
	case !errdefs.IsNotFound(err):
		return nil, d.wrap(fail("%v", err))
	case source == "registry":
		img, err = d.pull(ctx, name, snap)
		if err != nil {
			return nil, d.wrap(fail("pull: %v", err))
		}
	default:
		img, err = d.importArchive(ctx, name, value)
		if err != nil {
			return nil, d.wrap(fail("import %s: %v", source, err))
		}
	}
	unpacked, err := img.IsUnpacked(ctx, snap)
	if err != nil {
		return nil, d.wrap(fail("%v", err))
	}
	if !unpacked {
		if err := img.Unpack(ctx, snap); err != nil {
			return nil, d.wrap(fail("unpack into %s: %v", snap, err))
		}
	}
	return img, nil
}

func (d *Driver) lockImage(name string) func() {
	d.mu.Lock()
	if d.fetching == nil {
		d.fetching = map[string]*sync.Mutex{}
	}
	m, ok := d.fetching[name]
	if !ok {
		m = &sync.Mutex{}
		d.fetching[name] = m
	}
	d.mu.Unlock()
	m.Lock()
	return m.Unlock
}

func (d *Driver) pull(ctx context.Context, ref, snap string) (containerd.Image, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.PullTimeout)
	defer cancel()
	return d.client.Pull(ctx, ref,
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(snap),
		containerd.WithPullLabel(labelImage, "registry"))
}

// importArchive imports the OCI layout or docker save tar at path under
// name. Names inside the archive are ignored: the image is found by name,
// and a second name would escape image GC's bookkeeping.
func (d *Driver) importArchive(ctx context.Context, name, path string) (containerd.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	imgs, err := d.client.Import(ctx, f,
		containerd.WithIndexName(name),
		containerd.WithImageRefTranslator(func(string) string { return "" }),
		containerd.WithSkipDigestRef(func(string) bool { return true }),
		containerd.WithImageLabels(map[string]string{labelImage: "archive"}))
	if err != nil {
		return nil, err
	}
	for _, im := range imgs {
		if im.Name != name {
			// A docker archive names its images by their RepoTags.
			if err := d.client.ImageService().Delete(ctx, im.Name); err != nil && !errdefs.IsNotFound(err) {
				d.log.Warn("delete extra image name", "image", im.Name, "err", err)
			}
		}
	}
	img, err := d.client.GetImage(ctx, name)
	if err != nil {
		return nil, err
	}
	return img, nil
}

// snapshotter returns Config.Snapshotter, or overlayfs when containerd has
// it working, else native.
func (d *Driver) snapshotter(ctx context.Context) (string, error) {
	if d.cfg.Snapshotter != "" {
		return d.cfg.Snapshotter, nil
	}
	d.snapOnce.Do(func() {
		resp, err := d.client.IntrospectionService().Plugins(ctx, `type=="io.containerd.snapshotter.v1"`)
		if err != nil {
			d.snapErr = d.wrap(fmt.Errorf("list snapshotters: %w", err))
			return
		}
		ok := map[string]bool{}
		for _, p := range resp.Plugins {
			ok[p.ID] = p.InitErr == nil
		}
		switch {
		case ok["overlayfs"]:
			d.snap = "overlayfs"
		case ok["native"]:
			d.snap = "native"
		default:
			d.snapErr = fmt.Errorf("containerd at %s has neither the overlayfs nor the native snapshotter working", d.cfg.Socket)
		}
		d.log.Info("snapshotter", "name", d.snap)
	})
	if d.snapErr != nil {
		err := d.snapErr
		// A failed detection (containerd down) is tried again next time.
		d.snapOnce = sync.Once{}
		d.snapErr = nil
		return "", err
	}
	return d.snap, nil
}

// collectImages deletes, when Config.ImageGC is on, every image the driver
// imported or pulled that no container of the namespace uses; containerd's
// garbage collector then frees its content and snapshots. Failures are
// logged: the next delete tries again.
func (d *Driver) collectImages(ctx context.Context) {
	if !d.cfg.ImageGC {
		return
	}
	d.images.Lock()
	defer d.images.Unlock()
	imgs, err := d.client.ImageService().List(ctx, `labels."`+labelImage+`"`)
	if err != nil {
		d.log.Warn("image gc: list images", "err", err)
		return
	}
	cs, err := d.client.ContainerService().List(ctx)
	if err != nil {
		d.log.Warn("image gc: list containers", "err", err)
		return
	}
	used := map[string]bool{}
	for _, c := range cs {
		used[c.Image] = true
	}
	for _, im := range imgs {
		if used[im.Name] {
			continue
		}
		if err := d.client.ImageService().Delete(ctx, im.Name); err != nil && !errdefs.IsNotFound(err) {
			d.log.Warn("image gc: delete", "image", im.Name, "err", err)
			continue
		}
		d.log.Info("image gc: deleted unused image", "image", im.Name)
	}
}
