package cluster

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster/vfs"
)

func key(b byte) []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = b
	}
	return k
}

func withKeys(keys ...[]byte) func(int, *Config, *vfs.Options) {
	return func(_ int, c *Config, _ *vfs.Options) { c.GossipKeys = keys }
}

func TestNodeWithoutTheKeyCannotJoinOrInject(t *testing.T) {
	net, nodes := testCluster(t, 3, withKeys(key(1)))
	for name, keys := range map[string][][]byte{"wrongkey": {key(2)}, "nokey": nil} {
		t.Run(name, func(t *testing.T) {
			intruder := testNode(t, net, name, "", func(c *Config, _ *vfs.Options) {
				c.GossipKeys = keys
			})
			defer intruder.Close()
			if _, err := intruder.Store().PutValue("/run/"+name+"/evil", "injected"); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if err := intruder.Join(ctx, []string{nodes[0].GossipAddr()}); err == nil {
				t.Fatal("a node without the cluster's key joined")
			}
			// A marker written after the intruder tried proves gossip
			// ran in between; the intruder's entry must be nowhere.
			if _, err := nodes[0].Store().PutValue("/run/n0/marker-"+name, "x"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 20*time.Second, "the marker reaches n2", func() bool { return holds(nodes[2], "/run/n0/marker-"+name, "x") })
			for _, n := range nodes {
				if _, ok := n.Store().Get("/run/" + name + "/evil"); ok {
					t.Fatalf("%s holds an entry injected by a node without the key", n.Name())
				}
				if _, ok := n.Member(name); ok {
					t.Fatalf("%s lists the intruder as a member", n.Name())
				}
			}
		})
	}
}

func TestKeyRotationOnRunningCluster(t *testing.T) {
	oldKey, newKey := key(1), key(2)
	net, nodes := testCluster(t, 3, withKeys(oldKey))
	steps := []struct {
		name string
		keys [][]byte
	}{
		{"install", [][]byte{oldKey, newKey}},
		{"use", [][]byte{newKey, oldKey}},
		{"remove", [][]byte{newKey}},
	}
	for _, step := range steps {
		for _, n := range nodes {
			if err := n.ReloadKeys(step.keys); err != nil {
				t.Fatalf("%s on %s: %v", step.name, n.Name(), err)
			}
		}
		path := "/run/n0/after-" + step.name
		if _, err := nodes[0].Store().PutValue(path, step.name); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "the write after "+step.name+" reaches every node", func() bool {
			for _, n := range nodes {
				if !holds(n, path, step.name) {
					return false
				}
			}
			return true
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stale := testNode(t, net, "stale", "", func(c *Config, _ *vfs.Options) { c.GossipKeys = [][]byte{oldKey} })
	defer stale.Close()
	if err := stale.Join(ctx, []string{nodes[0].GossipAddr()}); err == nil {
		t.Fatal("a node with the removed key joined")
	}
	fresh := testNode(t, net, "fresh", "", func(c *Config, _ *vfs.Options) { c.GossipKeys = [][]byte{newKey} })
	defer fresh.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	if err := fresh.Join(ctx2, []string{nodes[0].GossipAddr()}); err != nil {
		t.Fatalf("a node with the new key could not join: %v", err)
	}
}

func TestReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	good := base64.StdEncoding.EncodeToString(key(7))
	cases := []struct {
		name, content, wantErr string
		wantKeys               int
	}{
		{"two keys", "# rotation\n" + good + "\n\n" + base64.StdEncoding.EncodeToString(key(8)) + "\n", "", 2},
		{"not base64", "%%%\n", "line 1: not base64", 0},
		{"wrong length", base64.StdEncoding.EncodeToString([]byte("short")) + "\n", "line 1", 0},
		{"empty", "\n# nothing\n", "no key in it", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-"))
			if err := os.WriteFile(p, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			keys, err := ReadKeyFile(p)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) || !strings.Contains(err.Error(), p) {
					t.Fatalf("got err %v, want one naming %s and containing %q", err, p, c.wantErr)
				}
				return
			}
			if err != nil || len(keys) != c.wantKeys {
				t.Fatalf("got %d keys, err %v; want %d", len(keys), err, c.wantKeys)
			}
		})
	}
	if _, err := ReadKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("a missing key file was accepted")
	}
}
