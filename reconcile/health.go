package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/ctxos/ctxos/drivers"
	"github.com/ctxos/ctxos/schema"
)

// Defaults of a health check whose fields are empty (the schema fills them
// in; snapshots built by hand may not).
const (
	DefaultHealthInterval  = 10 * time.Second
	DefaultHealthTimeout   = 2 * time.Second
	DefaultHealthThreshold = 3
)

// HealthCheck is a CTX's health check with its durations parsed.
type HealthCheck struct {
	Check     schema.Health
	Interval  time.Duration
	Timeout   time.Duration
	Threshold int
}

// ParseHealth checks h and parses its durations. Errors name the field.
func ParseHealth(h schema.Health) (HealthCheck, error) {
	hc := HealthCheck{Check: h, Interval: DefaultHealthInterval, Timeout: DefaultHealthTimeout, Threshold: h.Threshold}
	n := 0
	if h.TCP != nil {
		n++
		if h.TCP.Port <= 0 || h.TCP.Port > 65535 {
			return hc, fmt.Errorf("health.tcp.port: %d is not a port", h.TCP.Port)
		}
	}
	if h.HTTP != nil {
		n++
		if h.HTTP.Port <= 0 || h.HTTP.Port > 65535 {
			return hc, fmt.Errorf("health.http.port: %d is not a port", h.HTTP.Port)
		}
	}
	if h.Exec != nil {
		n++
		if len(h.Exec.Command) == 0 || h.Exec.Command[0] == "" {
			return hc, errors.New("health.exec.command: empty")
		}
	}
	if n != 1 {
		return hc, fmt.Errorf("health: want exactly one of tcp, http or exec, have %d", n)
	}
	for _, f := range []struct {
		name string
		s    string
		into *time.Duration
	}{{"health.interval", h.Interval, &hc.Interval}, {"health.timeout", h.Timeout, &hc.Timeout}} {
		if f.s == "" {
			continue
		}
		d, err := time.ParseDuration(f.s)
		if err != nil {
			return hc, fmt.Errorf("%s: %w", f.name, err)
		}
		if d <= 0 {
			return hc, fmt.Errorf("%s: %q is not positive", f.name, f.s)
		}
		*f.into = d
	}
	if hc.Threshold < 0 {
		return hc, fmt.Errorf("health.threshold: %d is negative", hc.Threshold)
	}
	if hc.Threshold == 0 {
		hc.Threshold = DefaultHealthThreshold
	}
	return hc, nil
}

// Probe runs the check once against this node, bounded by the timeout:
// tcp connects to 127.0.0.1:port; http GETs http://127.0.0.1:port/path and
// wants 2xx or 3xx; exec runs the command on the node (not inside a
// container) and wants exit 0. Instances of both runtimes share the
// node's network namespace, so their ports are the node's.
func (hc HealthCheck) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, hc.Timeout)
	defer cancel()
	h := hc.Check
	switch {
	case h.TCP != nil:
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(h.TCP.Port))
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return fmt.Errorf("tcp %s: %w", addr, err)
		}
		return conn.Close()
	case h.HTTP != nil:
		path := h.HTTP.Path
		if path == "" {
			path = "/"
		}
		url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(h.HTTP.Port)) + path
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("http %s: %w", url, err)
		}
		// A redirect counts as a pass: do not follow it.
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("http %s: %w", url, err)
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("http %s: status %d", url, resp.StatusCode)
		}
		return nil
	case h.Exec != nil:
		cmd := exec.CommandContext(ctx, h.Exec.Command[0], h.Exec.Command[1:]...)
		if out, err := cmd.CombinedOutput(); err != nil {
			if len(out) > 200 {
				out = out[:200]
			}
			return fmt.Errorf("exec %s: %w %q", h.Exec.Command[0], err, out)
		}
		return nil
	}
	return errors.New("health: no check")
}

// HealthResult is what the checks of one instance say so far.
type HealthResult struct {
	// Healthy is true after Threshold consecutive passes, false after
	// Threshold consecutive failures, nil before either.
	Healthy *bool
	// Message is the last failure, or how many checks passed.
	Message string
}

// healthTarget is one running instance to check. life identifies its
// life (spec, pid, start): a restart or a new spec starts the count again.
// check is the key of the check itself: a changed check restarts the
// probe but keeps the count, so an instance that was healthy stays so
// until the new check fails Threshold times.
type healthTarget struct {
	id       string
	life     string
	checkKey string
	check    HealthCheck
}

// healthProbes runs one goroutine per running instance with a health
// check, and keeps their results. A change of result triggers a pass
// (through onChange): a rollout waiting for an instance to be healthy goes
// on at once instead of at the next resync.
type healthProbes struct {
	log      *slog.Logger
	onChange func(id string)

	mu     sync.Mutex
	probes map[string]*healthProbe
}

type healthProbe struct {
	life, checkKey string
	cancel         context.CancelFunc
	done           chan struct{}

	passes, failures int
	result           HealthResult
}

func newHealthProbes(log *slog.Logger, onChange func(string)) *healthProbes {
	return &healthProbes{log: log, onChange: onChange, probes: map[string]*healthProbe{}}
}

// sync makes the running probes those of targets: new instances (or new
// lives of one) get a probe, gone ones lose theirs. Probes run under ctx.
func (hp *healthProbes) sync(ctx context.Context, targets []healthTarget) {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	want := map[string]healthTarget{}
	for _, t := range targets {
		want[t.id] = t
	}
	for id, p := range hp.probes {
		if t, ok := want[id]; !ok || t.life != p.life {
			p.cancel()
			delete(hp.probes, id)
		}
	}
	for id, t := range want {
		old, ok := hp.probes[id]
		if ok && old.checkKey == t.checkKey {
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		p := &healthProbe{life: t.life, checkKey: t.checkKey, cancel: cancel, done: make(chan struct{}),
			result: HealthResult{Message: "not checked yet"}}
		if ok {
			// The old goroutine may still write into old: it is dropped.
			old.cancel()
			p.passes, p.failures, p.result = old.passes, old.failures, old.result
		}
		hp.probes[id] = p
		go hp.run(pctx, t, p)
	}
}

// run checks t every interval until ctx ends.
func (hp *healthProbes) run(ctx context.Context, t healthTarget, p *healthProbe) {
	defer close(p.done)
	tick := time.NewTicker(t.check.Interval)
	defer tick.Stop()
	for {
		err := t.check.Probe(ctx)
		if ctx.Err() != nil {
			return
		}
		hp.mu.Lock()
		before := p.result.Healthy
		if err == nil {
			p.passes, p.failures = p.passes+1, 0
			p.result.Message = fmt.Sprintf("%d consecutive checks passed", p.passes)
			if p.passes >= t.check.Threshold {
				p.result.Healthy = ptrTo(true)
			}
		} else {
			p.passes, p.failures = 0, p.failures+1
			p.result.Message = fmt.Sprintf("%v (%d consecutive failures)", err, p.failures)
			if p.failures >= t.check.Threshold {
				p.result.Healthy = ptrTo(false)
			}
		}
		changed := !sameHealth(before, p.result.Healthy)
		res := p.result
		hp.mu.Unlock()
		if changed {
			hp.log.Info("health changed", "instance", t.id, "healthy", *res.Healthy, "message", res.Message)
			hp.onChange(t.id)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// result returns the health of instance id and whether it has a probe.
func (hp *healthProbes) result(id string) (HealthResult, bool) { return hp.lookup(id, "") }

// resultFor is result for the life of the instance observed as in: the
// probe of an earlier life (the replaced process, until the next pass
// syncs the probes) says nothing of this one.
func (hp *healthProbes) resultFor(in drivers.Instance) (HealthResult, bool) {
	return hp.lookup(in.ID, healthLife(in))
}

// lookup returns a copy of the result of id's probe, if it checks life
// (any life when life is "").
func (hp *healthProbes) lookup(id, life string) (HealthResult, bool) {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	p, ok := hp.probes[id]
	if !ok || life != "" && p.life != life {
		return HealthResult{}, false
	}
	r := p.result
	if r.Healthy != nil {
		r.Healthy = ptrTo(*r.Healthy)
	}
	return r, true
}

// healthLife identifies one life of an instance for its health probe:
// spec, pid and start, so a restart or a new spec counts again from zero.
func healthLife(in drivers.Instance) string {
	return fmt.Sprintf("%s/%d/%d", in.SpecHash, in.Pid, in.StartedAt.UnixNano())
}

// stop ends every probe and waits for them.
func (hp *healthProbes) stop() {
	hp.mu.Lock()
	probes := hp.probes
	hp.probes = map[string]*healthProbe{}
	hp.mu.Unlock()
	for _, p := range probes {
		p.cancel()
		<-p.done
	}
}

func sameHealth(a, b *bool) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func ptrTo[T any](v T) *T { return &v }
