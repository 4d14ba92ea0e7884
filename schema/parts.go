package schema

import (
	"sort"
	"strconv"
	"strings"

	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/parser"
	"cuelang.org/go/cue/token"
)

// literalParts splits files into parts of about partFiles files that can be
// evaluated one at a time with the same result as all together, or returns
// nil when they cannot. That is so when every file is plain data (see
// literalFile) and no CTX or MID is defined in more than one file (Vet
// checks that first, with checkNames): then no file refers to, constrains
// or adds to what another file defines under ctx and mid, and the files
// with other top-level fields (ztb, sys or mistakes) all go in the first
// part, so that they meet each other. files is reordered in place, and
// the parts share its backing array.
func literalParts(files []sourceFile, partFiles int) [][]sourceFile {
	for _, f := range files {
		if !literalFile(f.syntax) {
			return nil
		}
	}
	sort.SliceStable(files, func(i, j int) bool {
		return !onlyItems(files[i].syntax) && onlyItems(files[j].syntax)
	})
	first := 0
	for first < len(files) && !onlyItems(files[first].syntax) {
		first++
	}
	first = max(first, partFiles)
	var parts [][]sourceFile
	for start := 0; start < len(files); {
		end := min(start+partFiles, len(files))
		if start == 0 {
			end = min(first, len(files))
		}
		parts = append(parts, files[start:end:end])
		start = end
	}
	return parts
}

// partField is the field of wrapPart's file that holds the part.
const partField = "ctxosPart"

// wrapPart makes the files of one part, all plain data, one file whose
// only field is the part unified with schema.#Config:
//
//	ctxosPart: schema.#Config & {<every declaration of the part's files>}
//
// Evaluating that evaluates the user's value once, as part of #Config;
// building the files as an instance of their own, as unify does, first
// evaluates them alone. Plain data has no reference, import or let whose
// meaning could change by moving, and its syntax keeps its positions, so
// diagnostics are the same.
func wrapPart(files []sourceFile) sourceFile {
	f, err := parser.ParseFile(schemaFilePrefix+"part.cue",
		"package "+PackageName+"\n\nimport schema "+strconv.Quote(ImportPath)+"\n\n"+partField+": schema.#Config & {}\n")
	if err != nil {
		panic(err) // a constant source
	}
	var user *ast.StructLit
	for _, d := range f.Decls {
		if field, ok := d.(*ast.Field); ok {
			user = field.Value.(*ast.BinaryExpr).Y.(*ast.StructLit)
		}
	}
	for _, sf := range files {
		for _, d := range sf.syntax.Decls {
			if _, ok := d.(*ast.Package); !ok {
				user.Elts = append(user.Elts, d)
			}
		}
	}
	return sourceFile{rel: f.Filename, syntax: f}
}

// onlyItems reports whether every top-level field of f is ctx or mid.
func onlyItems(f *ast.File) bool {
	for _, d := range f.Decls {
		if x, ok := d.(*ast.Field); ok {
			if name, _, _ := ast.LabelName(x.Label); name != "ctx" && name != "mid" {
				return false
			}
		}
	}
	return true
}

// literalFile reports whether f, once stripped of its schema.#Config
// embedding, is plain data: fields with literal labels whose values are
// literals, and lists and structs of them, with ctx and mid structs. It
// has nothing that refers to or constrains another part of the
// configuration: no reference (not even to int or string), import,
// pattern, comprehension, embedding, let, alias, optional or required
// field, definition, hidden field, attribute or expression.
func literalFile(f *ast.File) bool {
	for _, d := range f.Decls {
		switch x := d.(type) {
		case *ast.Package, *ast.CommentGroup:
		case *ast.Field:
			name, _, _ := ast.LabelName(x.Label)
			if _, isStruct := x.Value.(*ast.StructLit); (name == "ctx" || name == "mid") && !isStruct {
				// A ctx that is not a struct spoils all of ctx when
				// evaluated together, but only its own part when not.
				return false
			}
			if !literalField(x) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

func literalField(f *ast.Field) bool {
	if f.Alias != nil || f.Constraint != token.ILLEGAL || len(f.Attrs) > 0 {
		return false
	}
	switch l := f.Label.(type) {
	case *ast.Ident:
		if strings.HasPrefix(l.Name, "#") || strings.HasPrefix(l.Name, "_") {
			return false
		}
	case *ast.BasicLit:
		if l.Kind != token.STRING {
			return false
		}
	default:
		return false
	}
	return literalValue(f.Value)
}

func literalValue(e ast.Expr) bool {
	switch x := e.(type) {
	case *ast.BasicLit:
		return true
	case *ast.UnaryExpr:
		_, ok := x.X.(*ast.BasicLit)
		return ok && (x.Op == token.SUB || x.Op == token.ADD)
	case *ast.StructLit:
		for _, elt := range x.Elts {
			switch y := elt.(type) {
			case *ast.Field:
				if !literalField(y) {
					return false
				}
			case *ast.CommentGroup:
			default:
				return false
			}
		}
		return true
	case *ast.ListLit:
		for _, elt := range x.Elts {
			if !literalValue(elt) {
				return false
			}
		}
		return true
	}
	return false
}
