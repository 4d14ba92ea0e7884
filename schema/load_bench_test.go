package schema

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// benchRepo scaffolds a repository and adds n CTX files in the style Init
// writes (package config, the schema imported and embedded).
func benchRepo(b *testing.B, n int) string {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "repo")
	if _, err := Init(context.Background(), dir, InitOptions{Module: "example.com/bench"}); err != nil {
		b.Fatal(err)
	}
	files := map[string]string{}
	for i := range n {
		files[fmt.Sprintf("ctx/svc-%04d.cue", i)] = fmt.Sprintf(`package config

import "github.com/ctxos/ctxos/schema"

schema.#Config

ctx: "svc-%04d": {
	command: "/usr/local/bin/svc"
	args: ["--id", "%d"]
	env: {SVC_ID: "%d", LOG_LEVEL: "info"}
	ports: http: %d
	health: http: {port: %d, path: "/healthz"}
	resources: {cpu: %d, memory: "%dMi"}
	placement: nodes: zone: "zone-%d"
	requires: ["hello"]
}
`, i, i, i, 10000+i, 10000+i, 100+i%400, 64+i%512, i%3)
	}
	for name, src := range files {
		writeFile(b, filepath.Join(dir, filepath.FromSlash(name)), src)
	}
	return dir
}

// BenchmarkLoad loads repositories of 100 and 1000 CTX files.
//
//	go test ./schema -run '^$' -bench Load -benchmem
func BenchmarkLoad(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("ctx=%d", n), func(b *testing.B) {
			dir := benchRepo(b, n)
			b.ReportAllocs()
			for b.Loop() {
				snap, diags, err := Load(context.Background(), dir)
				if err != nil || snap == nil {
					b.Fatalf("Load: %v %v", err, diags)
				}
			}
		})
	}
}
