package etcdbench

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ctxos/ctxos/cluster/vfs"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

const (
	nKeys       = 10_000
	parallelism = 16 // goroutines per core in the parallel runs
)

var sizes = []int{200, 4096}

// kv is what both sides offer the benchmark.
type kv interface {
	put(ctx context.Context, key string, value []byte) error
	get(ctx context.Context, key string) error
}

type vfsKV struct{ s *vfs.Store }

// flush waits for the group commit, so a write benchmark includes putting
// everything it wrote on disk.
func (v vfsKV) flush(ctx context.Context) error { return v.s.Flush(ctx) }

func (v vfsKV) put(_ context.Context, key string, value []byte) error {
	_, err := v.s.Put(key, value)
	return err
}

func (v vfsKV) get(_ context.Context, key string) error {
	if _, ok := v.s.Get(key); !ok {
		return fmt.Errorf("get %s: missing", key)
	}
	return nil
}

type etcdKV struct{ c *clientv3.Client }

func (e etcdKV) put(ctx context.Context, key string, value []byte) error {
	_, err := e.c.Put(ctx, key, string(value))
	return err
}

// get is a serializable read: served by the member from its own state,
// like a VFS read, without a round of consensus.
func (e etcdKV) get(ctx context.Context, key string) error {
	r, err := e.c.Get(ctx, key, clientv3.WithSerializable())
	if err != nil {
		return err
	}
	if len(r.Kvs) != 1 {
		return fmt.Errorf("get %s: missing", key)
	}
	return nil
}

func openVFS(b *testing.B) kv {
	b.Helper()
	s, err := vfs.Open(b.Context(), vfs.Options{Node: "n1", Dir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	})
	return vfsKV{s}
}

func freeURL(b *testing.B) url.URL {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}

// openEtcd starts a one-member etcd on loopback with its data in a temp
// dir and returns a gRPC client to it.
func openEtcd(b *testing.B) kv {
	b.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "bench"
	cfg.Dir = b.TempDir()
	// At "error" etcd logs its listeners closing on every shutdown.
	cfg.LogLevel = "fatal"
	client, peer := freeURL(b), freeURL(b)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.Name + "=" + peer.String()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		b.Fatal("etcd not ready within 60s")
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{client.String()}, DialTimeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return etcdKV{c}
}

// value is a CBOR byte string of exactly size bytes, valid for both sides.
func value(b *testing.B, size int) []byte {
	b.Helper()
	for n := size; n > 0; n-- {
		v, err := vfs.Encode(bytes.Repeat([]byte{'v'}, n))
		if err != nil {
			b.Fatal(err)
		}
		if len(v) == size {
			return v
		}
	}
	b.Fatalf("no CBOR value of %d bytes", size)
	return nil
}

func keys() []string {
	ks := make([]string, nKeys)
	for i := range ks {
		ks[i] = fmt.Sprintf("/hw/n1/bench/k%06d", i)
	}
	return ks
}

var stores = []struct {
	name string
	open func(*testing.B) kv
}{
	{"vfs", openVFS},
	{"etcd", openEtcd},
}

// BenchmarkWrite puts values under 10 000 keys in turn, from one goroutine
// (serial) and from 16 goroutines per core (parallel, which lets etcd batch
// many proposals into one fsync).
func BenchmarkWrite(b *testing.B) {
	for _, mode := range []string{"serial", "parallel"} {
		for _, size := range sizes {
			for _, st := range stores {
				b.Run(mode+"/"+strconv.Itoa(size)+"B/"+st.name, func(b *testing.B) {
					s := st.open(b)
					v, ks := value(b, size), keys()
					ctx := b.Context()
					b.SetBytes(int64(size))
					b.ResetTimer()
					run(b, mode, func(i int) error { return s.put(ctx, ks[i%nKeys], v) })
					if f, ok := s.(interface{ flush(context.Context) error }); ok {
						if err := f.flush(ctx); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
				})
			}
		}
	}
}

// BenchmarkRead gets values from 10 000 keys written beforehand.
func BenchmarkRead(b *testing.B) {
	for _, mode := range []string{"serial", "parallel"} {
		for _, size := range sizes {
			for _, st := range stores {
				b.Run(mode+"/"+strconv.Itoa(size)+"B/"+st.name, func(b *testing.B) {
					s := st.open(b)
					v, ks := value(b, size), keys()
					ctx := b.Context()
					for _, k := range ks {
						if err := s.put(ctx, k, v); err != nil {
							b.Fatal(err)
						}
					}
					b.ResetTimer()
					run(b, mode, func(i int) error { return s.get(ctx, ks[i%nKeys]) })
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
				})
			}
		}
	}
}

func run(b *testing.B, mode string, op func(i int) error) {
	if mode == "serial" {
		for i := 0; i < b.N; i++ {
			if err := op(i); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism(parallelism)
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(int(next.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
