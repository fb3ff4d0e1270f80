// Package logkeys holds a test that keeps the keys of mecha's structured
// logs (log/slog) consistent across the code base, so that a query for
// one key finds every line that means it.
package logkeys

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// renamed are keys with a canonical spelling.
var renamed = map[string]string{
	"error":      "err",
	"errors":     "err",
	"e":          "err",
	"app_id":     "app_id",
	"appid":      "app_id",
	"appID":      "app_id",
	"topicName":  "topic",
	"partitionn": "partition",
}

// keyRE is the shape of every key: snake_case.
var keyRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// slogMethods take alternating keys and values after their message (With
// takes them from the start).
var slogMethods = map[string]int{
	"Debug": 1, "Info": 1, "Warn": 1, "Error": 1,
	"DebugContext": 2, "InfoContext": 2, "WarnContext": 2, "ErrorContext": 2,
	"With": 0,
}

// componentOwners may name a subsystem with the "component" key: the
// wiring does it once per subsystem, so a library tagging itself too
// would log the key twice.
var componentOwners = []string{"runtime", "cmd/mecha"}

func TestLogKeys(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	var problems []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case "node_modules", "testdata", ".git", "bin":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		dir := filepath.ToSlash(filepath.Dir(rel))
		ownsComponent := false
		for _, o := range componentOwners {
			if dir == o {
				ownsComponent = true
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			first, ok := slogMethods[sel.Sel.Name]
			if !ok || len(call.Args) <= first {
				return true
			}
			if first > 0 {
				// A log call's message is a string literal; this
				// skips look-alikes such as status.Error(code, msg).
				if msg, ok := call.Args[first-1].(*ast.BasicLit); !ok || msg.Kind != token.STRING {
					return true
				}
			}
			for i := first; i < len(call.Args); i += 2 {
				lit, ok := call.Args[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					break // slog.Attr values, or not a key/value list
				}
				key, _ := strconv.Unquote(lit.Value)
				where := fset.Position(lit.Pos()).String()
				if want, ok := renamed[key]; ok && want != key {
					problems = append(problems, where+": log key "+strconv.Quote(key)+" should be "+strconv.Quote(want))
				}
				if !keyRE.MatchString(key) {
					problems = append(problems, where+": log key "+strconv.Quote(key)+" is not snake_case")
				}
				if key == "component" && !ownsComponent {
					problems = append(problems, where+`: "component" names a subsystem and is set by the runtime's wiring; a library setting it too logs it twice`)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
}
