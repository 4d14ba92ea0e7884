package gitsync

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/gitsync/internal/gittest"
	"github.com/ctxos/ctxos/schema"
)

// BenchmarkPushToInForce measures, for a repository of 100 CTXs, the time
// from a commit landing in the repository (git push done) and the webhook
// call to the new snapshot being in force on every node of a 3-node
// cluster (every node assembles the manifest's snapshot). It reports p50
// and p99 over b.N pushes.
func BenchmarkPushToInForce(b *testing.B) {
	repo := gittest.NewRepo(b)
	files := map[string]string{}
	for i := 0; i < 100; i++ {
		files[fmt.Sprintf("ctx/c%03d.cue", i)] = fmt.Sprintf("ctx: c%03d: {command: \"/bin/sleep\", args: [\"1000\"], replicas: 1}\n", i)
	}
	repo.Commit("100 ctxs", files)

	net := cluster.NewPartition()
	var nodes []*cluster.Node
	for i := 0; i < 3; i++ {
		tr, addr, err := net.NewLoopbackTransport()
		if err != nil {
			b.Fatal(err)
		}
		cfg := cluster.DefaultConfig()
		cfg.Name, cfg.BindAddr, cfg.Transport = fmt.Sprintf("n%d", i), addr, tr
		cfg.Logger = slog.New(slog.DiscardHandler)
		n, err := cluster.Start(context.Background(), cfg, vfs.Options{})
		if err != nil {
			b.Fatal(err)
		}
		defer n.Close()
		if i > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			if err := n.Join(ctx, []string{nodes[0].GossipAddr()}); err != nil {
				b.Fatal(err)
			}
			cancel()
		}
		nodes = append(nodes, n)
	}
	syncer := newSyncer(b, repo.Dir, nodes[0].Store())
	secret := []byte("bench-secret")
	hook, err := NewWebhook(secret, syncer.Fire, nil)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(hook)
	defer srv.Close()
	syncNow(b, syncer)

	inForceEverywhere := func(commit string) bool {
		for _, n := range nodes {
			e, ok := n.Store().Get(schema.PathRevision)
			if !ok {
				return false
			}
			var m schema.Manifest
			if schema.Decode(e.Value, &m) != nil || m.Commit != commit {
				return false
			}
			st := n.Store()
			if _, err := schema.Assemble(m, func(p string) ([]byte, bool) { e, ok := st.Get(p); return e.Value, ok }); err != nil {
				return false
			}
		}
		return true
	}
	var took []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		commit := repo.Commit(fmt.Sprintf("change %d", i), map[string]string{
			fmt.Sprintf("ctx/c%03d.cue", i%100): fmt.Sprintf("ctx: c%03d: {command: \"/bin/sleep\", args: [\"1000\"], replicas: %d}\n", i%100, 2+i),
		})
		body := []byte(`{"ref":"refs/heads/main","after":"` + commit + `"}`)
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
		b.StartTimer()
		start := time.Now()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			b.Fatalf("webhook answered %s", resp.Status)
		}
		deadline := start.Add(30 * time.Second)
		for !inForceEverywhere(commit) {
			if time.Now().After(deadline) {
				for _, n := range nodes {
					e, _ := n.Store().Get(schema.PathRevision)
					var m schema.Manifest
					schema.Decode(e.Value, &m)
					st := n.Store()
					_, aerr := schema.Assemble(m, func(p string) ([]byte, bool) { e, ok := st.Get(p); return e.Value, ok })
					b.Logf("%s: manifest commit %s gen %d: %v", n.Name(), m.Commit, m.Generation, aerr)
				}
				b.Fatalf("commit %s not in force on every node after 30s (syncer: %+v)", commit, syncer.Status())
			}
			time.Sleep(time.Millisecond)
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
}
