package schema

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"

	"github.com/ctxos/ctxos/cluster/vfs"
)

// Files is the CUE schema, embedded so that vetting a repository needs no
// setup. Init vendors the same files into a repository's cue.mod/.
//
//go:embed *.cue
var Files embed.FS

const (
	// ImportPath is the import path of the schema package, for user files
	// that import it and for the copy vendored in cue.mod/pkg.
	ImportPath = "github.com/ctxos/ctxos/schema"
	// PackageName is the package of desired-state files. A file may also
	// have no package clause; Load treats it as part of the same package.
	PackageName = "config"
	// MaxFileSize is the largest .cue file Load reads; larger files are
	// refused before parsing, so that a stray generated file cannot make
	// every node's sync slow.
	MaxFileSize = 1 << 20
	// LanguageVersion is the CUE language version that the embedded
	// evaluator (cuelang.org/go v0.17.1) implements; Init writes it into
	// cue.mod/module.cue.
	LanguageVersion = "v0.17.1"
)

var (
	// ErrNotDir is returned when the directory to load is a file.
	ErrNotDir = errors.New("not a directory")
	// ErrTimeout is returned when CUE evaluation does not finish before the
	// context's deadline.
	ErrTimeout = errors.New("evaluation did not finish within the timeout")
	// ErrMemory is returned by MemoryBytes for a malformed amount.
	ErrMemory = errors.New("invalid memory amount")
	// ErrNoEntry is returned by the Snapshot decode helpers when the entry
	// is missing.
	ErrNoEntry = errors.New("no such entry in snapshot")
)

// Diagnostic is one problem found in a desired-state repository.
type Diagnostic struct {
	File    string `json:"file"`           // relative to the loaded directory, with forward slashes; "." for the directory itself
	Line    int    `json:"line,omitempty"` // 1-based; 0 when the problem has no position inside File
	Column  int    `json:"column,omitempty"`
	Path    string `json:"path,omitempty"` // CUE path of the value, such as ctx.web.replicas
	Message string `json:"message"`
}

// String formats d as "file:line:col: path: message", leaving out what d
// does not have.
func (d Diagnostic) String() string {
	var b strings.Builder
	b.WriteString(d.File)
	if d.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", d.Line, d.Column)
	}
	b.WriteString(": ")
	if d.Path != "" {
		b.WriteString(d.Path)
		b.WriteString(": ")
	}
	b.WriteString(d.Message)
	return b.String()
}

// sourceFile is one parsed user file.
type sourceFile struct {
	rel    string // slash path relative to the repository
	syntax *ast.File
}

// Load loads and validates the desired-state directory dir. Invalid
// configuration is reported as diagnostics with a nil snapshot; err is
// only for I/O or usage problems (dir missing, not a directory, timeout).
//
// Only .cue files under ctx/, mid/, ztb/ and sys/ are desired state; cue.mod/
// and directories starting with a dot are skipped. Every file belongs to
// package config (or has no package clause) and is unified with the embedded
// schema's #Config, whether or not it imports the schema itself.
func Load(ctx context.Context, dir string) (*Snapshot, []Diagnostic, error) {
	r, diags, err := loadDir(ctx, dir, loadOptions{export: true})
	if r == nil {
		return nil, diags, err
	}
	return r.snap, diags, err
}

// Summary is what Vet tells of a valid directory.
type Summary struct {
	Ctx int // CTXs defined
	Mid int // MIDs defined
}

// Vet checks the desired-state directory dir as Load does and finds the
// same diagnostics, but builds no snapshot: of the evaluated configuration
// it reads back only the names, requires and ztb rules that the checks
// across items need, not every value, and encodes and hashes nothing. That
// is most of Load's time and memory after CUE evaluation, spent for
// nothing when the result is only "valid or not", as in CI. A repository
// of plain data, as most are, is evaluated in parts, a few at a time (see
// literalParts), so that its memory does not grow with its size. The
// summary is nil when there are diagnostics.
func Vet(ctx context.Context, dir string) (*Summary, []Diagnostic, error) {
	r, diags, err := loadDir(ctx, dir, loadOptions{partFiles: vetPartFiles})
	if r == nil {
		return nil, diags, err
	}
	return &r.summary, diags, err
}

// vetPartFiles is how many files Vet evaluates at a time where it may
// evaluate a repository in parts (see literalParts): a part's evaluation
// is dropped once it is checked, so Vet's memory grows with the part, one
// in flight per processor, rather than with the repository, while each
// part pays for building the schema again. 50 measured best of 25, 34,
// 50, 100 and 250 for 1000 files on 2 processors.
const vetPartFiles = 50

// loadOptions says what loadDir does after evaluation.
type loadOptions struct {
	export    bool // export the snapshot
	partFiles int  // without export: evaluate plain-data repositories this many files at a time; 0 means all at once
}

// loaded is the result of evaluating a valid directory: the snapshot, when
// it was asked for, and the summary.
type loaded struct {
	snap    *Snapshot
	summary Summary
}

func loadDir(ctx context.Context, dir string, opts loadOptions) (*loaded, []Diagnostic, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("load %s: %w", dir, err)
	}
	if !info.IsDir() {
		return nil, nil, fmt.Errorf("load %s: %w", dir, ErrNotDir)
	}
	files, diags, err := readFiles(ctx, dir)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, contextError(ctx, dir)
		}
		return nil, nil, err
	}
	if len(files) == 0 && len(diags) == 0 {
		diags = append(diags, Diagnostic{File: ".", Message: "no desired state found: no .cue files under ctx/, mid/, ztb/ or sys/"})
	}
	if len(diags) > 0 {
		return nil, sortDiagnostics(diags), nil
	}
	if ctx.Err() != nil {
		return nil, nil, contextError(ctx, dir)
	}

	type result struct {
		r     *loaded
		diags []Diagnostic
		err   error
	}
	done := make(chan result, 1)
	// CUE evaluation cannot be interrupted, so it runs in its own goroutine
	// and Load stops waiting at the deadline. The goroutine is abandoned and
	// runs on until evaluation ends; the CLI exits right after, and a
	// long-running caller pays that CPU once per runaway configuration.
	go func() {
		r, diags, err := evaluate(files, opts)
		done <- result{r, diags, err}
	}()
	select {
	case r := <-done:
		return r.r, sortDiagnostics(r.diags), r.err
	case <-ctx.Done():
		return nil, nil, contextError(ctx, dir)
	}
}

// contextError says why Load stopped early: ErrTimeout at the deadline,
// else the context's own error.
func contextError(ctx context.Context, dir string) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("load %s: %w", dir, ErrTimeout)
	}
	return fmt.Errorf("load %s: %w", dir, ctx.Err())
}

// readFiles walks dir and parses every desired-state file. Problems with a
// file are diagnostics; err is for I/O errors other than a bad file.
func readFiles(ctx context.Context, dir string) ([]sourceFile, []Diagnostic, error) {
	root, err := filepath.Abs(dir)
	if err == nil {
		root, err = filepath.EvalSymlinks(root)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("load %s: %w", dir, err)
	}
	var files []sourceFile
	var diags []Diagnostic
	var toRead []fileToRead
	walkErr := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if path == root {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == "cue.mod" || strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			return nil
		}
		readPath := path
		if d.Type()&fs.ModeSymlink != 0 {
			target, err := filepath.EvalSymlinks(path)
			if err != nil {
				diags = append(diags, Diagnostic{File: rel, Message: "broken symlink: " + pathErrReason(err)})
				return nil
			}
			if r, err := filepath.Rel(root, target); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
				diags = append(diags, Diagnostic{File: rel, Message: fmt.Sprintf("symlink points outside the repository (to %s): refused", target)})
				return nil
			}
			ti, err := os.Stat(target)
			if err != nil {
				return err
			}
			if ti.IsDir() {
				// Directories inside the repository are walked where they
				// are; following a link to them would load files twice.
				return nil
			}
			readPath = target
		}
		if !strings.HasSuffix(rel, ".cue") {
			return nil
		}
		first, _, nested := strings.Cut(rel, "/")
		if !nested || !vfs.IsDesired(first) {
			diags = append(diags, Diagnostic{File: rel, Message: "file outside the known roots: desired state lives under ctx/, mid/, ztb/ or sys/"})
			return nil
		}
		toRead = append(toRead, fileToRead{path: readPath, rel: rel})
		return nil
	})
	if walkErr != nil {
		return nil, nil, fmt.Errorf("load %s: %w", dir, walkErr)
	}

	// Parsing is most of the time here, and files parse independently:
	// on every processor, results kept in walk order.
	type read struct {
		syntax *ast.File
		diags  []Diagnostic
	}
	reads := make([]read, len(toRead))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(toRead)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(toRead); i = int(next.Add(1) - 1) {
				reads[i].syntax, reads[i].diags = readFile(toRead[i].path, toRead[i].rel)
			}
		})
	}
	wg.Wait()
	for i, r := range reads {
		if r.diags != nil {
			diags = append(diags, r.diags...)
			continue
		}
		files = append(files, sourceFile{rel: toRead[i].rel, syntax: r.syntax})
	}
	return files, diags, nil
}

// fileToRead is a desired-state file found by readFiles: where to read it
// (the target of a symlink) and its name in the repository.
type fileToRead struct{ path, rel string }

func pathErrReason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// readFile reads and parses one file, refusing what is too large or not
// UTF-8 before the parser sees it.
func readFile(path, rel string) (*ast.File, []Diagnostic) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, []Diagnostic{{File: rel, Message: "cannot read: " + pathErrReason(err)}}
	}
	if fi.Size() > MaxFileSize {
		return nil, []Diagnostic{{File: rel, Message: fmt.Sprintf("file is %d bytes, more than the limit of %d bytes (1 MiB): refused", fi.Size(), MaxFileSize)}}
	}
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, []Diagnostic{{File: rel, Message: "cannot read: " + pathErrReason(err)}}
	}
	if !utf8.Valid(src) {
		line, col := invalidUTF8At(src)
		return nil, []Diagnostic{{File: rel, Line: line, Column: col, Message: "file is not valid UTF-8"}}
	}
	f, err := parser.ParseFile(rel, src)
	if err != nil {
		return nil, errorDiagnostics(err, nil)
	}
	var diags []Diagnostic
	if name := f.PackageName(); name != "" && name != PackageName {
		diags = append(diags, posDiagnostic(f.Pos(), "", fmt.Sprintf("package %s: desired-state files are package %s (or have no package clause)", name, PackageName)))
	}
	for spec := range f.ImportSpecs() {
		p, err := strconv.Unquote(spec.Path.Value)
		if err != nil || p == ImportPath {
			continue
		}
		if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") {
			diags = append(diags, posDiagnostic(spec.Pos(), "", fmt.Sprintf("import %q: only %s and CUE's standard library can be imported", p, ImportPath)))
		}
	}
	return f, diags
}

func invalidUTF8At(src []byte) (line, col int) {
	line, col = 1, 1
	for len(src) > 0 {
		r, size := utf8.DecodeRune(src)
		if r == utf8.RuneError && size <= 1 {
			return line, col
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col += size
		}
		src = src[size:]
	}
	return line, col
}

func posDiagnostic(pos token.Pos, path, msg string) Diagnostic {
	d := Diagnostic{File: pos.Filename(), Path: path, Message: msg}
	if pos.IsValid() {
		d.Line, d.Column = pos.Line(), pos.Column()
	}
	return d
}

func sortDiagnostics(diags []Diagnostic) []Diagnostic {
	sort.Slice(diags, func(i, j int) bool {
		a, b := diags[i], diags[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		if a.Column != b.Column {
			return a.Column < b.Column
		}
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		return a.Message < b.Message
	})
	out := diags[:0]
	for i, d := range diags {
		if i == 0 || d != diags[i-1] {
			out = append(out, d)
		}
	}
	return out
}

// schemaInstance builds the embedded schema as the importable package
// ImportPath.
func schemaInstance(bctx *build.Context) (*build.Instance, error) {
	inst := bctx.NewInstance("", nil)
	inst.ImportPath = ImportPath
	entries, err := fs.ReadDir(Files, ".")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		src, err := Files.ReadFile(e.Name())
		if err != nil {
			return nil, err
		}
		f, err := parser.ParseFile(schemaFilePrefix+e.Name(), src)
		if err != nil {
			return nil, err
		}
		if err := inst.AddSyntax(f); err != nil {
			return nil, err
		}
	}
	return inst, nil
}

// schemaFilePrefix names the embedded schema's files in CUE positions, so
// that they are never taken for a user's file.
const schemaFilePrefix = "$ctxos/schema/"

// evaluation holds what evaluate needs to turn CUE errors into diagnostics.
type evaluation struct {
	userFiles map[string]bool      // rel paths of user files
	fields    map[string]token.Pos // path (ctx.web.replicas) → label position in the user's files
	embeds    map[token.Pos]bool   // top-level embeddings, such as schema.#Config
}

// evaluate unifies the user's files with the schema, validates the result
// and, with opts.export, exports the snapshot.
func evaluate(files []sourceFile, opts loadOptions) (*loaded, []Diagnostic, error) {
	ev := &evaluation{
		userFiles: make(map[string]bool, len(files)),
		fields:    make(map[string]token.Pos),
		embeds:    make(map[token.Pos]bool),
	}
	diags := checkNames(files)
	for _, f := range files {
		ev.userFiles[f.rel] = true
		ev.indexFields("", f.syntax.Decls)
		stripConfigEmbed(f.syntax)
	}
	// A name defined twice or not a VFS segment is an error already;
	// duplicates would also meet only when evaluated together.
	if !opts.export && opts.partFiles > 0 && len(diags) == 0 {
		if parts := literalParts(files, opts.partFiles); len(parts) > 0 {
			return ev.evaluateParts(parts)
		}
	}
	inst, d, err := ev.instance(files)
	if err != nil {
		return nil, nil, err
	}
	diags = append(diags, d...)
	if inst.Err != nil {
		return nil, append(diags, errorDiagnostics(inst.Err, ev)...), nil
	}
	config, err := unify(inst)
	if err != nil {
		return nil, nil, err
	}
	if err := valueErrors(config); err != nil {
		return nil, append(diags, errorDiagnostics(err, ev)...), nil
	}
	if err := config.Validate(cue.Concrete(true)); err != nil {
		return nil, append(diags, errorDiagnostics(err, ev)...), nil
	}
	if len(diags) > 0 {
		return nil, diags, nil
	}
	if !opts.export {
		refs := newReferences()
		if err := refs.read(config, true); err != nil {
			return nil, nil, fmt.Errorf("read the evaluated configuration: %w", err)
		}
		if d := ev.checkReferences(refs); len(d) > 0 {
			return nil, d, nil
		}
		return &loaded{summary: Summary{Ctx: len(refs.ctx), Mid: len(refs.mid)}}, nil, nil
	}
	var cfg Config
	if err := decodeValue(config, reflect.ValueOf(&cfg).Elem(), ""); err != nil {
		return nil, nil, fmt.Errorf("decode the evaluated configuration: %w", err)
	}
	if d := ev.checkReferences(referencesOf(&cfg)); len(d) > 0 {
		return nil, d, nil
	}
	snap, err := snapshotOf(&cfg)
	if err != nil {
		return nil, nil, err
	}
	return &loaded{snap: snap, summary: Summary{Ctx: len(cfg.Ctx), Mid: len(cfg.Mid)}}, nil, nil
}

// instance builds files into one CUE instance that imports the schema.
// Problems adding a file are diagnostics.
func (ev *evaluation) instance(files []sourceFile) (*build.Instance, []Diagnostic, error) {
	bctx := build.NewContext()
	sinst, err := schemaInstance(bctx)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded schema: %w", err)
	}
	inst := bctx.NewInstance("", nil)
	inst.Imports = []*build.Instance{sinst}
	var diags []Diagnostic
	for _, f := range files {
		if err := inst.AddSyntax(f.syntax); err != nil {
			diags = append(diags, errorDiagnostics(err, ev)...)
		}
	}
	return inst, diags, nil
}

// unify evaluates inst unified with #Config, in a CUE context of its own:
// a context keeps every instance built in it, so one per evaluation is
// what lets an evaluation's memory go with its value.
//
// The user's files are unified with #Config as a whole, not file by file
// (see stripConfigEmbed). The user's value is not checked on its own
// first: any error in it shows in the unified value as well.
func unify(inst *build.Instance) (cue.Value, error) {
	cctx := cuecontext.New()
	schema := cctx.BuildInstance(inst.Imports[0])
	if err := schema.Err(); err != nil {
		return cue.Value{}, fmt.Errorf("embedded schema: %w", err)
	}
	user := cctx.BuildInstance(inst)
	return schema.LookupPath(cue.MakePath(cue.Def("#Config"))).Unify(user), nil
}

// valueErrors returns every error in config other than values left
// incomplete, or nil when there is none. config.Err alone tells only the
// first; with every error, evaluating in parts finds what evaluating all
// at once does.
func valueErrors(config cue.Value) error {
	err := config.Err()
	if err == nil {
		return nil
	}
	if all := config.Validate(); all != nil {
		return all
	}
	return err
}

// partResult is what evaluateParts keeps of one part.
type partResult struct {
	valueErrs, concreteErrs []Diagnostic
	refs                    *references // nil when the part has errors
	err                     error
}

// evaluateParts evaluates each part on its own, keeping of each only its
// diagnostics and references, and reports what evaluating them together
// would: every error of the values if any part has one, else every
// concreteness error, else the problems across parts that
// checkReferences finds.
func (ev *evaluation) evaluateParts(parts [][]sourceFile) (*loaded, []Diagnostic, error) {
	insts := make([]*build.Instance, len(parts))
	var diags, instErrs []Diagnostic
	for i, p := range parts {
		inst, d, err := ev.instance([]sourceFile{wrapPart(p)})
		if err != nil {
			return nil, nil, err
		}
		diags = append(diags, d...)
		if inst.Err != nil {
			instErrs = append(instErrs, errorDiagnostics(inst.Err, ev)...)
		}
		insts[i] = inst
	}
	if len(instErrs) > 0 {
		return nil, append(diags, instErrs...), nil
	}
	// Parts share nothing but ev, which is only read now, and the ztb
	// rules: the first part, which has them, goes first, then the others
	// on every processor.
	results := make([]partResult, len(insts))
	evalPart := func(i int, allow []Rule) {
		r := &results[i]
		config := cuecontext.New().BuildInstance(insts[i]).LookupPath(cue.MakePath(cue.Str(partField)))
		// Nothing but config refers to the part's instance and syntax
		// from here on.
		insts[i] = nil
		for j := range parts[i] {
			parts[i][j].syntax = nil
		}
		if err := valueErrors(config); err != nil {
			r.valueErrs = errorDiagnostics(err, ev)
			return
		}
		if err := config.Validate(cue.Concrete(true)); err != nil {
			r.concreteErrs = errorDiagnostics(err, ev)
			return
		}
		r.refs = newReferences()
		r.refs.allow = allow
		if err := r.refs.read(config, i == 0); err != nil {
			r.err = fmt.Errorf("read the evaluated configuration: %w", err)
		}
	}
	evalPart(0, nil)
	var allow []Rule
	if results[0].refs != nil {
		allow = results[0].refs.allow
	}
	var next atomic.Int64
	next.Store(1)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(insts)-1) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(insts); i = int(next.Add(1) - 1) {
				evalPart(i, allow)
			}
		})
	}
	wg.Wait()

	refs := newReferences()
	refs.allow = allow
	var valueErrs, concreteErrs []Diagnostic
	for _, r := range results {
		if r.err != nil {
			return nil, nil, r.err
		}
		valueErrs = append(valueErrs, r.valueErrs...)
		concreteErrs = append(concreteErrs, r.concreteErrs...)
		if r.refs != nil {
			maps.Copy(refs.ctx, r.refs.ctx)
			maps.Copy(refs.mid, r.refs.mid)
			maps.Copy(refs.ports, r.refs.ports)
		}
	}
	switch {
	case len(valueErrs) > 0:
		return nil, append(diags, valueErrs...), nil
	case len(concreteErrs) > 0:
		return nil, append(diags, concreteErrs...), nil
	case len(diags) > 0:
		return nil, diags, nil
	}
	if d := ev.checkReferences(refs); len(d) > 0 {
		return nil, d, nil
	}
	return &loaded{summary: Summary{Ctx: len(refs.ctx), Mid: len(refs.mid)}}, nil, nil
}

// normalizeNumbers turns json.Number into int64 where the number is whole,
// else float64, so that driver params keep their integer type in CBOR.
func normalizeNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalizeNumbers(e)
		}
		if x == nil {
			return map[string]any{}
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = normalizeNumbers(e)
		}
		return x
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	}
	return v
}

func snapshotOf(cfg *Config) (*Snapshot, error) {
	var entries []Entry
	add := func(path string, v any) error {
		b, err := encMode.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode %s: %w", path, err)
		}
		entries = append(entries, Entry{Path: path, Value: b})
		return nil
	}
	for name, c := range cfg.Ctx {
		if err := add("/ctx/"+name, c); err != nil {
			return nil, err
		}
	}
	for name, m := range cfg.Mid {
		if err := add("/mid/"+name, m); err != nil {
			return nil, err
		}
	}
	if err := add(PathZtb, cfg.Ztb); err != nil {
		return nil, err
	}
	if err := add(PathSys, cfg.Sys); err != nil {
		return nil, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	return &Snapshot{Entries: entries, Hash: HashEntries(entries)}, nil
}

// stripConfigEmbed removes a top-level `schema.#Config` embedding (and the
// schema import when nothing else uses it) from a user file. Load unifies
// the whole package with #Config once; keeping one embedding per file
// makes CUE check closedness against as many copies of #Config as there
// are files, which grows with the square of the file count (seconds for a
// few hundred files). The result is the same: every field still has to be
// allowed by #Config.
func stripConfigEmbed(f *ast.File) {
	name := ""
	for spec := range f.ImportSpecs() {
		if p, err := strconv.Unquote(spec.Path.Value); err == nil && p == ImportPath {
			name = "schema"
			if spec.Name != nil {
				name = spec.Name.Name
			}
		}
	}
	if name == "" {
		return
	}
	isEmbed := func(d ast.Decl) bool {
		e, ok := d.(*ast.EmbedDecl)
		if !ok {
			return false
		}
		sel, ok := e.Expr.(*ast.SelectorExpr)
		if !ok {
			return false
		}
		x, ok := sel.X.(*ast.Ident)
		label, _, err := ast.LabelName(sel.Sel)
		return ok && x.Name == name && err == nil && label == "#Config"
	}
	decls := f.Decls[:0]
	for _, d := range f.Decls {
		if !isEmbed(d) {
			decls = append(decls, d)
		}
	}
	f.Decls = decls

	// Drop the import if the file no longer refers to it, since CUE
	// refuses unused imports.
	used := false
	ast.Walk(f, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.ImportDecl:
			return false
		case *ast.Ident:
			if x.Name == name {
				used = true
			}
		}
		return !used
	}, nil)
	if used {
		return
	}
	decls = f.Decls[:0]
	for _, d := range f.Decls {
		if imp, ok := d.(*ast.ImportDecl); ok {
			specs := imp.Specs[:0]
			for _, spec := range imp.Specs {
				if p, err := strconv.Unquote(spec.Path.Value); err != nil || p != ImportPath {
					specs = append(specs, spec)
				}
			}
			if len(specs) == 0 {
				continue
			}
			imp.Specs = specs
		}
		decls = append(decls, d)
	}
	f.Decls = decls
}
