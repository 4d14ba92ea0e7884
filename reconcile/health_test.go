package reconcile

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ctxos/ctxos/schema"
)

// portOf is the port of a 127.0.0.1 listener address.
func portOf(tb testing.TB, addr string) int {
	tb.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// closedPort is a 127.0.0.1 port nothing listens on (it did a moment ago).
func closedPort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := portOf(tb, ln.Addr().String())
	ln.Close()
	return p
}

func TestHealthProbe(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
		case "/moved":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		default:
			http.Error(w, "no", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	up := portOf(t, srv.Listener.Addr().String())
	down := closedPort(t)
	tests := []struct {
		name    string
		check   schema.Health
		wantErr string // "" passes
	}{
		{"tcp open", schema.Health{TCP: &schema.TCPCheck{Port: up}}, ""},
		{"tcp closed", schema.Health{TCP: &schema.TCPCheck{Port: down}}, "tcp 127.0.0.1:" + strconv.Itoa(down)},
		{"http 200", schema.Health{HTTP: &schema.HTTPCheck{Port: up, Path: "/ok"}}, ""},
		{"http 302 passes", schema.Health{HTTP: &schema.HTTPCheck{Port: up, Path: "/moved"}}, ""},
		{"http 503", schema.Health{HTTP: &schema.HTTPCheck{Port: up, Path: "/bad"}}, "status 503"},
		{"http closed", schema.Health{HTTP: &schema.HTTPCheck{Port: down, Path: "/"}}, "http http://127.0.0.1:"},
		{"exec true", schema.Health{Exec: &schema.ExecCheck{Command: []string{"true"}}}, ""},
		{"exec false", schema.Health{Exec: &schema.ExecCheck{Command: []string{"sh", "-c", "echo broken; exit 3"}}}, "exit status 3"},
		{"exec missing", schema.Health{Exec: &schema.ExecCheck{Command: []string{"/nonexistent/check"}}}, "/nonexistent/check"},
		{"exec timeout", schema.Health{Exec: &schema.ExecCheck{Command: []string{"sleep", "10"}}, Timeout: "50ms"}, "killed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hc, err := ParseHealth(tt.check)
			if err != nil {
				t.Fatal(err)
			}
			err = hc.Probe(context.Background())
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Probe = %v, want a pass", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Probe = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseHealth(t *testing.T) {
	tcp := &schema.TCPCheck{Port: 80}
	tests := []struct {
		name    string
		h       schema.Health
		want    HealthCheck
		wantErr string
	}{
		{"defaults", schema.Health{TCP: tcp}, HealthCheck{Interval: DefaultHealthInterval, Timeout: DefaultHealthTimeout, Threshold: DefaultHealthThreshold}, ""},
		{"set", schema.Health{TCP: tcp, Interval: "1s", Timeout: "300ms", Threshold: 2}, HealthCheck{Interval: time.Second, Timeout: 300 * time.Millisecond, Threshold: 2}, ""},
		{"none", schema.Health{}, HealthCheck{}, "exactly one of tcp, http or exec, have 0"},
		{"two", schema.Health{TCP: tcp, Exec: &schema.ExecCheck{Command: []string{"true"}}}, HealthCheck{}, "have 2"},
		{"bad port", schema.Health{TCP: &schema.TCPCheck{Port: 70000}}, HealthCheck{}, "health.tcp.port: 70000"},
		{"bad http port", schema.Health{HTTP: &schema.HTTPCheck{Port: 0}}, HealthCheck{}, "health.http.port: 0"},
		{"empty exec", schema.Health{Exec: &schema.ExecCheck{}}, HealthCheck{}, "health.exec.command: empty"},
		{"bad interval", schema.Health{TCP: tcp, Interval: "often"}, HealthCheck{}, "health.interval:"},
		{"zero timeout", schema.Health{TCP: tcp, Timeout: "0s"}, HealthCheck{}, `health.timeout: "0s" is not positive`},
		{"negative threshold", schema.Health{TCP: tcp, Threshold: -1}, HealthCheck{}, "health.threshold: -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseHealth(tt.h)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Interval != tt.want.Interval || got.Timeout != tt.want.Timeout || got.Threshold != tt.want.Threshold {
				t.Fatalf("got %v/%v/%d, want %v/%v/%d", got.Interval, got.Timeout, got.Threshold, tt.want.Interval, tt.want.Timeout, tt.want.Threshold)
			}
		})
	}
}

// gate is a TCP listener a test opens and closes, for checks to pass and
// fail on demand.
type gate struct {
	mu   sync.Mutex
	addr string
	ln   net.Listener
}

func newGate(tb testing.TB) *gate {
	tb.Helper()
	g := &gate{}
	g.open(tb)
	g.addr = g.ln.Addr().String()
	tb.Cleanup(g.close)
	return g
}

func (g *gate) open(tb testing.TB) {
	tb.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	addr := g.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	g.ln = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ln != nil {
		g.ln.Close()
		g.ln = nil
	}
}

func TestHealthProbesThreshold(t *testing.T) {
	g := newGate(t)
	changes := make(chan string, 16)
	hp := newHealthProbes(testLogger(), func(id string) { changes <- id })
	defer hp.stop()
	hc, err := ParseHealth(schema.Health{TCP: &schema.TCPCheck{Port: portOf(t, g.addr)}, Interval: "20ms", Timeout: "1s", Threshold: 2})
	if err != nil {
		t.Fatal(err)
	}
	target := healthTarget{id: "ctx.web.0", life: "h1/1/1", checkKey: "k", check: hc}
	hp.sync(context.Background(), []healthTarget{target})
	if res, ok := hp.result("ctx.web.0"); !ok || res.Healthy != nil {
		t.Fatalf("result before any check = %+v, %v; want unknown", res, ok)
	}
	healthy := func(want bool) func() (bool, string) {
		return func() (bool, string) {
			res, _ := hp.result("ctx.web.0")
			return res.Healthy != nil && *res.Healthy == want, res.Message
		}
	}
	waitUntil(t, "healthy after 2 passes", healthy(true))
	if got := <-changes; got != "ctx.web.0" {
		t.Fatalf("change for %q", got)
	}
	g.close()
	waitUntil(t, "unhealthy after 2 failures", healthy(false))
	res, _ := hp.result("ctx.web.0")
	if !strings.Contains(res.Message, "consecutive failures") || !strings.Contains(res.Message, "tcp 127.0.0.1:") {
		t.Errorf("message %q does not count failures", res.Message)
	}

	// A changed check keeps the verdict; a new life starts afresh.
	target.checkKey = "k2"
	hp.sync(context.Background(), []healthTarget{target})
	if res, _ := hp.result("ctx.web.0"); res.Healthy == nil || *res.Healthy {
		t.Fatalf("after a check change: %+v, want the unhealthy verdict kept", res)
	}
	target.life = "h2/2/2"
	hp.sync(context.Background(), []healthTarget{target})
	if res, _ := hp.result("ctx.web.0"); res.Healthy != nil {
		t.Fatalf("new life: %+v, want unknown", res)
	}
	hp.sync(context.Background(), nil)
	if _, ok := hp.result("ctx.web.0"); ok {
		t.Fatal("probe of a gone instance still there")
	}
}
