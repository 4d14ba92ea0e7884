package cluster

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func testAPI(t *testing.T) (*Node, *Client) {
	t.Helper()
	_, nodes := testCluster(t, 1, nil)
	srv := httptest.NewServer(NewAPI(nodes[0]))
	t.Cleanup(srv.Close)
	return nodes[0], NewClient(srv.URL)
}

func TestAPIReadWriteList(t *testing.T) {
	n, c := testAPI(t)
	ctx := context.Background()
	if _, err := n.Store().PutValue("/sys/config", map[string]any{"interval": "30s"}); err != nil {
		t.Fatal(err)
	}
	e, err := c.Put(ctx, "/run/n0/x", map[string]any{"replicas": 3, "ratio": 0.5, "name": "web"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Version.Node != "n0" {
		t.Errorf("writer = %q, want n0", e.Version.Node)
	}
	got, err := c.Get(ctx, "/run/n0/x")
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"name":"web","ratio":0.5,"replicas":3}`; compact(got.Value) != want {
		t.Errorf("value = %s, want %s", got.Value, want)
	}
	var stored map[string]any
	raw, _ := n.Store().Get("/run/n0/x")
	if err := decodeInto(raw.Value, &stored); err != nil {
		t.Fatal(err)
	}
	if _, isInt := stored["replicas"].(uint64); !isInt {
		t.Errorf("replicas stored as %T, want a CBOR integer", stored["replicas"])
	}
	list, err := c.List(ctx, "/")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Path != "/run/n0/x" || list[1].Path != "/sys/config" {
		t.Errorf("list / = %+v", list)
	}
	if err := c.Delete(ctx, "/run/n0/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "/run/n0/x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get after delete: err = %v, want ErrNotFound", err)
	}
}

func TestAPIRefusals(t *testing.T) {
	_, c := testAPI(t)
	ctx := context.Background()
	cases := []struct {
		name, path, want string
		do               func(path string) error
	}{
		{"desired root put", "/ctx/web", "desired state comes from git (HTTP 403)", func(p string) error { _, err := c.Put(ctx, p, 1); return err }},
		{"desired root delete", "/sys/config", "desired state comes from git (HTTP 403)", func(p string) error { return c.Delete(ctx, p) }},
		{"another node's key", "/hw/other", "(HTTP 403)", func(p string) error { _, err := c.Put(ctx, p, 1); return err }},
		{"bad segment", "/run/n0/Upper", `segment "Upper"`, func(p string) error { _, err := c.Put(ctx, p, 1); return err }},
		{"unknown root", "/etc/passwd", "unknown root /etc", func(p string) error { _, err := c.Get(ctx, p); return err }},
		{"missing", "/run/n0/none", "no such entry", func(p string) error { _, err := c.Get(ctx, p); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if err := c.Do(ctx, "PUT", "/v1/kv/run/n0/bad", nil, nil); err == nil {
		t.Error("an empty body was accepted as a value")
	}
}

func TestAPIWatchStreamsChanges(t *testing.T) {
	n, c := testAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	events, err := c.Watch(ctx, "/run/n0")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Store().PutValue("/run/n0/a", "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Store().PutValue("/sum/n0", "ignored: other prefix"); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Store().Delete("/run/n0/a"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for ev := range events {
		if ev.Resync {
			continue
		}
		kind := "put"
		if ev.Entry.Deleted {
			kind = "delete"
		}
		got = append(got, kind+" "+ev.Entry.Path)
		if len(got) == 2 {
			break
		}
	}
	if want := []string{"put /run/n0/a", "delete /run/n0/a"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("events = %v, want %v", got, want)
	}
}

func TestAPIMembersAndStatus(t *testing.T) {
	n, c := testAPI(t)
	ctx := context.Background()
	if _, err := n.Store().PutValue("/hw/n0", map[string]any{"cpu": map[string]any{"threads": 2}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Store().PutValue("/sum/n0", map[string]any{"cpuPercent": 12.5}); err != nil {
		t.Fatal(err)
	}
	ms, err := c.Members(ctx)
	if err != nil || len(ms) != 1 || ms[0].Name != "n0" || ms[0].State != StateAlive {
		t.Fatalf("members = %+v, err %v", ms, err)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 1 || compact(st.Members[0].Sum) != `{"cpuPercent":12.5}` || st.Members[0].LastSeen.IsZero() {
		t.Fatalf("status = %+v", st)
	}
}

// TestAPIEntriesAsStored reads entries in CBOR: the value bytes are the
// store's, including a float with no fraction that JSON would turn into an
// integer.
func TestAPIEntriesAsStored(t *testing.T) {
	n, c := testAPI(t)
	ctx := context.Background()
	want, err := n.Store().PutValue("/sys/config", map[string]any{"ratio": 2.0, "replicas": 3})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetEntry(ctx, "/sys/config")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Value, want.Value) || got.Version != want.Version || got.Path != want.Path {
		t.Errorf("GetEntry = %+v, want %+v", got, want)
	}
	list, err := c.ListEntries(ctx, "/sys")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || !bytes.Equal(list[0].Value, want.Value) {
		t.Errorf("ListEntries(/sys) = %+v, want the one entry as stored", list)
	}
	if _, err := c.GetEntry(ctx, "/sys/none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetEntry of a missing path: err = %v, want ErrNotFound", err)
	}
	if _, err := c.ListEntries(ctx, "/Bad"); err == nil || !strings.Contains(err.Error(), "/Bad") {
		t.Errorf("ListEntries of a bad prefix: err = %v, want one naming it", err)
	}
}
