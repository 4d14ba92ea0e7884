package schema

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/ctxos/ctxos/cluster/vfs"
)

// ErrNotEmpty is returned by Init when the target directory has files.
var ErrNotEmpty = errors.New("directory is not empty")

// VendorDir is where Init vendors the schema inside a repository, so that
// the official `cue vet` resolves `import "github.com/ctxos/ctxos/schema"`.
const VendorDir = "cue.mod/pkg/" + ImportPath

// InitOptions say what Init writes.
type InitOptions struct {
	// Module is the CUE module path written to cue.mod/module.cue; empty
	// means "example.com/" plus the directory's name.
	Module string
	// Name is the name of the sample CTX; empty means "hello".
	Name string
}

// Init scaffolds a desired-state repository in dir (created if missing, and
// refused with ErrNotEmpty if it has any file): cue.mod/module.cue, the
// schema vendored into VendorDir, one sample CTX and a README. It returns
// the files written, relative to dir.
//
// Every user file is package config, imports the schema and embeds
// schema.#Config, so `cue vet ./...` checks each file against the same
// schema that `ctxos vet` applies to the whole repository.
func Init(ctx context.Context, dir string, opts InitOptions) ([]string, error) {
	if opts.Name == "" {
		opts.Name = "hello"
	}
	if !vfs.ValidSegment(opts.Name) {
		return nil, fmt.Errorf("init: CTX name %q must match [a-z0-9][a-z0-9._-]*", opts.Name)
	}
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("init %s: %w: refusing to overwrite it", dir, ErrNotEmpty)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("init %s: %w", dir, err)
	}
	if opts.Module == "" {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return nil, fmt.Errorf("init %s: %w", dir, err)
		}
		opts.Module = "example.com/" + moduleElement(filepath.Base(abs))
	}

	files := map[string]string{
		"cue.mod/module.cue": fmt.Sprintf("module: %q\nlanguage: {\n\tversion: %q\n}\n", opts.Module, LanguageVersion),
		"ctx/" + opts.Name + ".cue": fmt.Sprintf(`package config

import "github.com/ctxos/ctxos/schema"

schema.#Config

// %[1]s is a sample CTX: a host process, so it runs without root or
// containerd. Give it an image to run it as a container instead.
ctx: %[1]s: {
	command: "/bin/sh"
	args: ["-c", "while true; do echo hello from %[1]s; sleep 60; done"]
	resources: {
		cpu:    50
		memory: "16Mi"
	}
	restart: "always"
}
`, opts.Name),
		"README.md": `# Desired state

This repository is the desired state of a ctxos cluster: CUE files under

- ` + "`ctx/`" + ` execution contexts (containers and processes),
- ` + "`mid/`" + ` bare-metal service deployments,
- ` + "`ztb/`" + ` the zero trust bridge policy between CTXs,
- ` + "`sys/`" + ` cluster settings.

Every file starts with ` + "`package config`" + `, imports
` + "`github.com/ctxos/ctxos/schema`" + ` and embeds ` + "`schema.#Config`" + `.
Define each CTX or MID in one file only.

    ctxos vet .       # the schema is built into ctxos
    cue vet ./...     # uses the copy vendored in ` + "`" + VendorDir + "`" + `
    cue export ./ctx  # the effective configuration, defaults included

The vendored schema is a copy: refresh it from a newer ctxos with
` + "`ctxos init`" + ` in an empty directory and copy its ` + "`cue.mod/pkg`" + `.
`,
	}
	entries, err := fs.ReadDir(Files, ".")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		b, err := Files.ReadFile(e.Name())
		if err != nil {
			return nil, err
		}
		files[path.Join(VendorDir, e.Name())] = string(b)
	}

	var written []string
	for _, name := range sortedKeys(files) {
		if err := ctx.Err(); err != nil {
			return written, err
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return written, fmt.Errorf("init: %w", err)
		}
		if err := os.WriteFile(p, []byte(files[name]), 0o644); err != nil {
			return written, fmt.Errorf("init: %w", err)
		}
		written = append(written, name)
	}
	return written, nil
}

var nonModuleChars = regexp.MustCompile(`[^a-z0-9._-]+`)

// moduleElement turns a directory name into a valid module path element.
func moduleElement(name string) string {
	s := strings.Trim(nonModuleChars.ReplaceAllString(strings.ToLower(name), "-"), "-._")
	if s == "" {
		return "config"
	}
	return s
}
