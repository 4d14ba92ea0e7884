// Package containerdtest builds the container image the containerd tests
// run: an image archive of Debian's busybox-static, made in Go because no
// image can be pulled where the tests run. It is a non-test package so that
// every package testing against containerd shares it.
package containerdtest

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BusyboxPath is where Debian's busybox-static puts the binary the
// test image is made of.
const BusyboxPath = "/bin/busybox"

// Applets are linked to /bin/busybox in the test image.
var Applets = []string{
	"sh", "sleep", "httpd", "cat", "echo", "true", "false", "env", "id", "pwd", "ls",
	"head", "dd", "yes", "kill", "mkdir", "touch", "wget", "tail", "seq",
}

// ImageConfig is what the test image says about running it.
var ImageConfig = ocispec.ImageConfig{
	Env:        []string{"PATH=/bin", "FROM_IMAGE=yes"},
	Entrypoint: []string{"/bin/sh", "-c"},
	Cmd:        []string{"trap 'exit 0' TERM; sleep 1000 & wait"},
	WorkingDir: "/",
}

// BuildArchive returns an image archive of busybox-static in format: "oci"
// (an OCI image layout) or "docker" (docker save), named "test" /
// "busybox:ctxos-test". No registry is needed: tests import it.
func BuildArchive(format string) (archive []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("build test image: %v", r)
		}
	}()
	return buildArchive(format), nil
}

// WriteArchive writes BuildArchive(format) to path.
func WriteArchive(path, format string) error {
	b, err := BuildArchive(format)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func buildArchive(format string) []byte {
	layer := busyboxLayer()
	diffID := digest.FromBytes(layer)
	cfg := ocispec.Image{
		Created:  ptr(time.Unix(0, 0).UTC()),
		Platform: ocispec.Platform{Architecture: runtime.GOARCH, OS: "linux"},
		Config:   ImageConfig,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	}
	cfgJSON := mustJSON(cfg)
	var files []tarFile
	switch format {
	case "oci":
		cfgDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfgJSON), Size: int64(len(cfgJSON))}
		layerDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayer, Digest: diffID, Size: int64(len(layer))}
		manifest := mustJSON(ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ocispec.MediaTypeImageManifest,
			Config:    cfgDesc,
			Layers:    []ocispec.Descriptor{layerDesc},
		})
		index := mustJSON(ocispec.Index{
			Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ocispec.MediaTypeImageIndex,
			Manifests: []ocispec.Descriptor{{
				MediaType:   ocispec.MediaTypeImageManifest,
				Digest:      digest.FromBytes(manifest),
				Size:        int64(len(manifest)),
				Platform:    &cfg.Platform,
				Annotations: map[string]string{ocispec.AnnotationRefName: "test"},
			}},
		})
		blob := func(b []byte) tarFile {
			return tarFile{name: "blobs/sha256/" + digest.FromBytes(b).Encoded(), body: b}
		}
		files = []tarFile{
			{name: ocispec.ImageLayoutFile, body: mustJSON(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})},
			{name: "index.json", body: index},
			blob(manifest), blob(cfgJSON), blob(layer),
		}
	case "docker":
		cfgName := digest.FromBytes(cfgJSON).Encoded() + ".json"
		layerName := diffID.Encoded() + "/layer.tar"
		manifest := mustJSON([]map[string]any{{
			"Config": cfgName, "RepoTags": []string{"busybox:ctxos-test"}, "Layers": []string{layerName},
		}})
		files = []tarFile{
			{name: "manifest.json", body: manifest},
			{name: cfgName, body: cfgJSON},
			{name: layerName, body: layer},
		}
	default:
		panic("unknown archive format " + format)
	}
	return tarOf(files)
}

// busyboxLayer is a root filesystem: /bin/busybox with its applets, /etc
// with root and nobody, and the mount points runc expects.
func busyboxLayer() []byte {
	bin, err := os.ReadFile(BusyboxPath)
	check(err)
	files := []tarFile{
		{name: "bin/", dir: true}, {name: "etc/", dir: true}, {name: "tmp/", dir: true, mode: 0o1777},
		{name: "proc/", dir: true}, {name: "sys/", dir: true}, {name: "dev/", dir: true}, {name: "data/", dir: true},
		{name: "bin/busybox", body: bin, mode: 0o755},
		{name: "etc/passwd", body: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{name: "etc/group", body: []byte("root:x:0:\nnogroup:x:65534:\n")},
	}
	for _, a := range Applets {
		files = append(files, tarFile{name: "bin/" + a, link: "busybox"})
	}
	return tarOf(files)
}

type tarFile struct {
	name string
	body []byte
	dir  bool
	link string
	mode int64
}

func tarOf(files []tarFile) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: 0o644, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		switch {
		case f.dir:
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		case f.link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.link, 0o777
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.body))
		}
		if f.mode != 0 {
			h.Mode = f.mode
		}
		check(tw.WriteHeader(h))
		_, err := tw.Write(f.body)
		check(err)
	}
	check(tw.Close())
	return buf.Bytes()
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	check(err)
	return b
}

func check(err error) {
	if err != nil {
		panic(err)
	}
}

func ptr[T any](v T) *T { return &v }
