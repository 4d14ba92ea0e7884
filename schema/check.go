package schema

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	cueerrors "cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/token"

	"github.com/ctxos/ctxos/cluster/vfs"
)

// definition is where one CTX or MID name is written.
type definition struct {
	kind, name string
	pos        token.Pos
}

// checkNames finds every literal CTX and MID name in the files' syntax: each
// must be a valid VFS segment, and each must be defined in one file only,
// because CUE would silently unify two files' definitions into one.
func checkNames(files []sourceFile) []Diagnostic {
	var diags []Diagnostic
	byName := map[string][]definition{}
	var order []string
	for _, f := range files {
		seen := map[string]bool{}
		var defs []definition
		collectDefinitions(f.syntax.Decls, &defs)
		for _, d := range defs {
			key := d.kind + "." + d.name
			if !vfs.ValidSegment(d.name) {
				diags = append(diags, posDiagnostic(d.pos, key,
					fmt.Sprintf("invalid %s name %q: names become VFS path segments and must match [a-z0-9][a-z0-9._-]*", kindWord(d.kind), d.name)))
				continue
			}
			if seen[key] {
				continue
			}
			seen[key] = true
			if _, ok := byName[key]; !ok {
				order = append(order, key)
			}
			byName[key] = append(byName[key], d)
		}
	}
	for _, key := range order {
		defs := byName[key]
		if len(defs) < 2 {
			continue
		}
		for i, d := range defs {
			var others []string
			for j, o := range defs {
				if j != i {
					others = append(others, fmt.Sprintf("%s:%d:%d", o.pos.Filename(), o.pos.Line(), o.pos.Column()))
				}
			}
			diags = append(diags, posDiagnostic(d.pos, key,
				fmt.Sprintf("%s %s is defined in more than one file (also at %s): define each %s in one file", kindWord(d.kind), d.name, strings.Join(others, ", "), kindWord(d.kind))))
		}
	}
	return diags
}

func kindWord(kind string) string { return strings.ToUpper(kind) }

// collectDefinitions walks top-level declarations (and embedded struct
// literals, as in `schema.#Config & {ctx: ...}`) for ctx: and mid: fields.
func collectDefinitions(decls []ast.Decl, out *[]definition) {
	for _, decl := range decls {
		switch x := decl.(type) {
		case *ast.Field:
			kind, _, err := ast.LabelName(x.Label)
			if err != nil || (kind != "ctx" && kind != "mid") {
				continue
			}
			if s, ok := x.Value.(*ast.StructLit); ok {
				for _, elt := range s.Elts {
					f, ok := elt.(*ast.Field)
					if !ok {
						continue
					}
					// Pattern constraints ([string]: ...) and computed
					// labels name no single CTX.
					if _, ok := f.Label.(*ast.ListLit); ok {
						continue
					}
					name, _, err := ast.LabelName(f.Label)
					if err != nil {
						continue
					}
					*out = append(*out, definition{kind: kind, name: name, pos: f.Label.Pos()})
				}
			}
		case *ast.EmbedDecl:
			collectEmbedded(x.Expr, out)
		}
	}
}

func collectEmbedded(e ast.Expr, out *[]definition) {
	switch x := e.(type) {
	case *ast.StructLit:
		collectDefinitions(x.Elts, out)
	case *ast.BinaryExpr:
		if x.Op == token.AND {
			collectEmbedded(x.X, out)
			collectEmbedded(x.Y, out)
		}
	case *ast.ParenExpr:
		collectEmbedded(x.X, out)
	}
}

// oneOf names the choices of the schema's matchN(1, ...) constraints, by the
// last element of the path, so that their errors read as advice rather than
// as a dump of the value.
var oneOf = map[string]string{
	"health": "tcp, http or exec",
	"nodes":  "all, selector or count",
}

// errorDiagnostics turns CUE errors into diagnostics, each placed in the
// user's file where possible, and drops the echoes CUE adds around the
// error that matters: the "N errors in empty disjunction" header, the
// conflict with a default next to the constraint the value broke, and the
// missing choices of a matchN.
func errorDiagnostics(err error, ev *evaluation) []Diagnostic {
	type cueError struct {
		e    cueerrors.Error
		path []string
		msg  string
	}
	var errs []cueError
	invalid := map[string]bool{} // paths with a broken constraint
	matchN := map[string]bool{}  // paths with a matchN error
	for _, e := range cueerrors.Errors(err) {
		path := e.Path()
		// The user's value is evaluated as #Config, or as a part's field
		// (see wrapPart); that is no part of the user's paths.
		if len(path) > 0 && (path[0] == "#Config" || path[0] == partField) {
			path = path[1:]
		}
		format, args := e.Msg()
		ce := cueError{e: e, path: path, msg: fmt.Sprintf(format, args...)}
		key := strings.Join(path, ".")
		if strings.HasPrefix(ce.msg, "incomplete value") {
			ce.msg += " (the value must be concrete: a single string, number, bool, list or struct)"
		}
		if strings.HasPrefix(ce.msg, "invalid value") {
			invalid[key] = true
		}
		if m := matchNCount.FindStringSubmatch(e.Error()); m != nil && len(path) > 0 {
			matchN[key] = true
			if choices, ok := oneOf[path[len(path)-1]]; ok {
				ce.msg = fmt.Sprintf("set exactly one of %s (%s)", choices, m[1])
			}
		}
		errs = append(errs, ce)
	}
	var diags []Diagnostic
	for _, ce := range errs {
		key := strings.Join(ce.path, ".")
		parent := ""
		if len(ce.path) > 0 {
			parent = strings.Join(ce.path[:len(ce.path)-1], ".")
		}
		switch {
		case strings.Contains(ce.msg, "errors in empty disjunction"):
			continue
		case invalid[key] && strings.HasPrefix(ce.msg, "conflicting values"):
			continue
		case matchN[parent] && strings.Contains(ce.msg, "required but not present"):
			continue
		}
		d := Diagnostic{File: ".", Path: key, Message: ce.msg}
		if pos, ok := ev.position(ce.e, ce.path); ok {
			d.File, d.Line, d.Column = pos.Filename(), pos.Line(), pos.Column()
		} else if p := ce.e.Position(); ev == nil && p.IsValid() {
			// Syntax errors, before there is an evaluation.
			d.File, d.Line, d.Column = p.Filename(), p.Line(), p.Column()
		}
		diags = append(diags, d)
	}
	return diags
}

var matchNCount = regexp.MustCompile(`does not satisfy matchN.*?(\d+ matched, expected \d+)`)

// position finds where in the user's files an error belongs: the field
// at the error's path (or the value on the same line that the error
// points at), else a position the error names in a user file, else the
// field at the nearest parent path.
func (ev *evaluation) position(e cueerrors.Error, path []string) (token.Pos, bool) {
	if ev == nil {
		return token.NoPos, false
	}
	if pos, ok := ev.fields[strings.Join(path, ".")]; ok && len(path) > 0 {
		// Prefer the error's own position of the value on the field's
		// line ("three" in replicas: "three") to the field's label.
		for _, p := range cueerrors.Positions(e) {
			if p.Filename() == pos.Filename() && p.Line() == pos.Line() && p.Column() > pos.Column() {
				return p, true
			}
		}
		return pos, true
	}
	for _, p := range cueerrors.Positions(e) {
		// An embedded schema.#Config takes part in every error of its
		// file; it says nothing about where the problem is.
		if ev.userFiles[p.Filename()] && !ev.embeds[p] {
			return p, true
		}
	}
	return ev.pathPosition(path)
}

// pathPosition is the position of the field at path or its nearest parent.
func (ev *evaluation) pathPosition(path []string) (token.Pos, bool) {
	for i := len(path); i > 0; i-- {
		if p, ok := ev.fields[strings.Join(path[:i], ".")]; ok {
			return p, true
		}
	}
	return token.NoPos, false
}

// indexFields records the position of every field with a literal label,
// and of every list element, by path, first file first.
func (ev *evaluation) indexFields(prefix string, decls []ast.Decl) {
	for _, decl := range decls {
		switch x := decl.(type) {
		case *ast.Field:
			name, _, err := ast.LabelName(x.Label)
			if err != nil {
				continue
			}
			key := name
			if prefix != "" {
				key = prefix + "." + name
			}
			if _, ok := ev.fields[key]; !ok {
				ev.fields[key] = x.Label.Pos()
			}
			ev.indexValue(key, x.Value)
		case *ast.EmbedDecl:
			if prefix == "" {
				ev.embeds[x.Expr.Pos()] = true
			}
			ev.indexValue(prefix, x.Expr)
		}
	}
}

func (ev *evaluation) indexValue(path string, e ast.Expr) {
	switch x := e.(type) {
	case *ast.StructLit:
		ev.indexFields(path, x.Elts)
	case *ast.ListLit:
		for i, elt := range x.Elts {
			key := path + "." + strconv.Itoa(i)
			if _, ok := ev.fields[key]; !ok {
				ev.fields[key] = elt.Pos()
			}
			ev.indexValue(key, elt)
		}
	case *ast.BinaryExpr:
		if x.Op == token.AND {
			ev.indexValue(path, x.X)
			ev.indexValue(path, x.Y)
		}
	case *ast.ParenExpr:
		ev.indexValue(path, x.X)
	}
}

// at returns a diagnostic placed at the user's value at path.
func (ev *evaluation) at(path []string, msg string) Diagnostic {
	d := Diagnostic{File: ".", Path: strings.Join(path, "."), Message: msg}
	if pos, ok := ev.pathPosition(path); ok {
		d.File, d.Line, d.Column = pos.Filename(), pos.Line(), pos.Column()
	}
	return d
}

// references is what checkReferences reads of a configuration.
type references struct {
	ctx, mid map[string][]string // name → the names it requires
	allow    []Rule              // ztb.allow
	// ports holds the ports that exist of those that ztb rules name by
	// name, so that the configuration need not be kept to look them up.
	ports map[namedPort]bool
}

// namedPort is a port of a CTX, by name.
type namedPort struct{ ctx, port string }

func newReferences() *references {
	return &references{ctx: map[string][]string{}, mid: map[string][]string{}, ports: map[namedPort]bool{}}
}

// referencesOf takes the references of a decoded configuration.
func referencesOf(cfg *Config) *references {
	r := newReferences()
	r.allow = cfg.Ztb.Allow
	for name, c := range cfg.Ctx {
		r.ctx[name] = c.Requires
	}
	for name, m := range cfg.Mid {
		r.mid[name] = m.Requires
	}
	for _, rule := range r.allow {
		if _, ok := cfg.Ctx[rule.To].Ports[rule.Port.Name]; ok {
			r.ports[namedPort{rule.To, rule.Port.Name}] = true
		}
	}
	return r
}

// read adds the references in the evaluated configuration to r,
// looking up only requires in each CTX and MID, the ports that r's ztb
// rules name, and, with readAllow, the ztb rules first.
func (r *references) read(config cue.Value, readAllow bool) error {
	if readAllow {
		allow := config.LookupPath(cue.ParsePath("ztb.allow"))
		if allow.Exists() {
			if err := decodeValue(allow, reflect.ValueOf(&r.allow).Elem(), "ztb.allow"); err != nil {
				return err
			}
		}
	}
	ctxs, err := requiresIn(config, "ctx", r.ctx)
	if err != nil {
		return err
	}
	if _, err := requiresIn(config, "mid", r.mid); err != nil {
		return err
	}
	for _, rule := range r.allow {
		if rule.Port.Name == "" || !ctxs[rule.To] {
			continue
		}
		p := cue.MakePath(cue.Str("ctx"), cue.Str(rule.To), cue.Str("ports"), cue.Str(rule.Port.Name))
		if config.LookupPath(p).Exists() {
			r.ports[namedPort{rule.To, rule.Port.Name}] = true
		}
	}
	return nil
}

// requiresIn adds the name of every item under the top-level field kind,
// with its requires, to out, and returns the names it added.
func requiresIn(config cue.Value, kind string, out map[string][]string) (map[string]bool, error) {
	names := map[string]bool{}
	v := config.LookupPath(cue.MakePath(cue.Str(kind)))
	if !v.Exists() {
		return names, nil
	}
	it, err := v.Fields()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", kind, err)
	}
	for it.Next() {
		name := it.Selector().Unquoted()
		var requires []string
		if req := it.Value().LookupPath(cue.MakePath(cue.Str("requires"))); req.Exists() {
			path := kind + "." + name + ".requires"
			if err := decodeValue(req, reflect.ValueOf(&requires).Elem(), path); err != nil {
				return nil, err
			}
		}
		out[name] = requires
		names[name] = true
	}
	return names, nil
}

// checkReferences checks what CUE cannot see across the configuration:
// ztb rules and requires must name existing CTXs or MIDs, and requires
// must not form a cycle.
func (ev *evaluation) checkReferences(refs *references) []Diagnostic {
	var diags []Diagnostic
	exists := func(name string) bool {
		_, c := refs.ctx[name]
		_, m := refs.mid[name]
		return c || m
	}
	for i, r := range refs.allow {
		idx := strconv.Itoa(i)
		for _, end := range []struct{ field, name string }{{"from", r.From}, {"to", r.To}} {
			if !exists(end.name) {
				diags = append(diags, ev.at([]string{"ztb", "allow", idx, end.field},
					fmt.Sprintf("%q names no CTX or MID", end.name)))
			}
		}
		if _, ok := refs.ctx[r.To]; ok && r.Port.Name != "" {
			if !refs.ports[namedPort{r.To, r.Port.Name}] {
				diags = append(diags, ev.at([]string{"ztb", "allow", idx, "port"},
					fmt.Sprintf("CTX %s has no port named %q", r.To, r.Port.Name)))
			}
		}
	}

	// requires, as one graph over CTXs and MIDs (names are unique across
	// both only by convention, so a node is kind.name).
	type node struct{ kind, name string }
	graph := map[node][]node{}
	var nodes []node
	addEdges := func(kind, name string, requires []string) {
		n := node{kind, name}
		nodes = append(nodes, n)
		for j, req := range requires {
			_, isCtx := refs.ctx[req]
			_, isMid := refs.mid[req]
			switch {
			case isCtx:
				graph[n] = append(graph[n], node{"ctx", req})
			case isMid:
				graph[n] = append(graph[n], node{"mid", req})
			default:
				diags = append(diags, ev.at([]string{kind, name, "requires", strconv.Itoa(j)},
					fmt.Sprintf("%q names no CTX or MID", req)))
			}
		}
	}
	for _, name := range sortedKeys(refs.ctx) {
		addEdges("ctx", name, refs.ctx[name])
	}
	for _, name := range sortedKeys(refs.mid) {
		addEdges("mid", name, refs.mid[name])
	}
	const (
		unvisited = iota
		onStack
		finished
	)
	state := map[node]int{}
	var stack []node
	var visit func(n node)
	visit = func(n node) {
		state[n] = onStack
		stack = append(stack, n)
		for _, m := range graph[n] {
			switch state[m] {
			case unvisited:
				visit(m)
			case onStack:
				start := 0
				for i, s := range stack {
					if s == m {
						start = i
					}
				}
				var names []string
				for _, s := range stack[start:] {
					names = append(names, s.name)
				}
				names = append(names, m.name)
				diags = append(diags, ev.at([]string{m.kind, m.name, "requires"},
					"requires cycle: "+strings.Join(names, " -> ")))
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = finished
	}
	for _, n := range nodes {
		if state[n] == unvisited {
			visit(n)
		}
	}
	return diags
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
