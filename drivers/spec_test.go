package drivers

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func validSpec() Spec {
	return Spec{ID: "ctx.web.0", Kind: KindCTX, Name: "web", Command: "sleep", Args: []string{"1000"}}
}

func TestHashDeterministic(t *testing.T) {
	t.Parallel()
	a := validSpec()
	a.Env = map[string]string{"A": "1", "B": "2", "C": "3"}
	b := validSpec()
	b.Env = map[string]string{"C": "3", "B": "2", "A": "1"}
	if got, want := a.Hash(), b.Hash(); got != want {
		t.Errorf("same env in another order: hash %s, want %s", got, want)
	}
	c, d := validSpec(), validSpec()
	c.Labels, c.Ports, c.Mounts = map[string]string{}, map[string]int{}, []Mount{}
	if got, want := c.Hash(), d.Hash(); got != want {
		t.Errorf("empty maps vs nil: hash %s, want %s", got, want)
	}
	if got := len(a.Hash()); got != 32 {
		t.Errorf("hash length = %d, want 32", got)
	}
}

func TestHashChanges(t *testing.T) {
	t.Parallel()
	base := validSpec().Hash()
	for name, mod := range map[string]func(*Spec){
		"args":    func(s *Spec) { s.Args = []string{"2000"} },
		"env":     func(s *Spec) { s.Env = map[string]string{"A": "1"} },
		"memory":  func(s *Spec) { s.Resources.MemoryBytes = 1 << 20 },
		"restart": func(s *Spec) { s.Restart.Policy = RestartNever },
		"grace":   func(s *Spec) { s.Stop.Grace = time.Second },
		"isolate": func(s *Spec) { s.Isolate = true },
		"label":   func(s *Spec) { s.Labels = map[string]string{"a": "b"} },
	} {
		s := validSpec()
		mod(&s)
		if s.Hash() == base {
			t.Errorf("%s: hash did not change", name)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		mod   func(*Spec)
		field string // "" means valid
	}{
		{"valid", func(*Spec) {}, ""},
		{"valid full", func(s *Spec) {
			s.Restart = RestartPolicy{Policy: RestartOnFailure, BackoffBase: time.Second, BackoffMax: time.Minute}
			s.Ports = map[string]int{"http": 8080}
			s.Stop = StopPolicy{Signal: "INT", Grace: time.Second}
			s.Mounts = []Mount{{Source: "/data", Target: "/data", ReadOnly: true}}
			s.Dir = "/tmp"
		}, ""},
		{"empty id", func(s *Spec) { s.ID = "" }, "id"},
		{"upper id", func(s *Spec) { s.ID = "Web" }, "id"},
		{"slash id", func(s *Spec) { s.ID = "ctx/web" }, "id"},
		{"double dot id", func(s *Spec) { s.ID = "ctx..web" }, "id"},
		{"long id", func(s *Spec) { s.ID = strings.Repeat("a", MaxIDLen+1) }, "id"},
		{"kind", func(s *Spec) { s.Kind = "pod" }, "kind"},
		{"name", func(s *Spec) { s.Name = "Web" }, "name"},
		{"env name", func(s *Spec) { s.Env = map[string]string{"A=B": "1"} }, "env"},
		{"relative dir", func(s *Spec) { s.Dir = "tmp" }, "dir"},
		{"negative memory", func(s *Spec) { s.Resources.MemoryBytes = -1 }, "resources"},
		{"policy", func(s *Spec) { s.Restart.Policy = "sometimes" }, "restart.policy"},
		{"negative backoff", func(s *Spec) { s.Restart.BackoffBase = -time.Second }, "restart"},
		{"max below base", func(s *Spec) { s.Restart = RestartPolicy{BackoffBase: time.Minute, BackoffMax: time.Second} }, "restart.backoff_max"},
		{"port range", func(s *Spec) { s.Ports = map[string]int{"http": 70000} }, "ports.http"},
		{"port name", func(s *Spec) { s.Ports = map[string]int{"HTTP": 80} }, "ports"},
		{"mount target", func(s *Spec) { s.Mounts = []Mount{{Source: "/a", Target: "b"}} }, "mounts[0].target"},
		{"mount source", func(s *Spec) { s.Mounts = []Mount{{Target: "/b"}} }, "mounts[0].source"},
		{"signal", func(s *Spec) { s.Stop.Signal = "SIGNOPE" }, "stop.signal"},
		{"grace", func(s *Spec) { s.Stop.Grace = -1 }, "stop.grace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec()
			tt.mod(&s)
			err := s.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("Validate() = %v, want ErrInvalidSpec", err)
			}
			if !strings.Contains(err.Error(), tt.field+":") || !strings.Contains(err.Error(), s.ID) {
				t.Errorf("Validate() = %q, want it to name field %q and instance %q", err, tt.field, s.ID)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	s := validSpec()
	s.Restart = RestartPolicy{BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second}
	tests := []struct {
		n    int
		want time.Duration
	}{{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {3, 400 * time.Millisecond}, {4, 800 * time.Millisecond}, {5, time.Second}, {50, time.Second}}
	for _, tt := range tests {
		if got := s.Backoff(tt.n); got != tt.want {
			t.Errorf("Backoff(%d) = %s, want %s", tt.n, got, tt.want)
		}
	}
	if got, want := validSpec().Backoff(1), DefaultBackoffBase; got != want {
		t.Errorf("default Backoff(1) = %s, want %s", got, want)
	}
	if got, want := validSpec().Backoff(100), DefaultBackoffMax; got != want {
		t.Errorf("default Backoff(100) = %s, want %s", got, want)
	}
}

func TestParseSignal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want unix.Signal
		ok   bool
	}{{"", unix.SIGTERM, true}, {"SIGINT", unix.SIGINT, true}, {"hup", unix.SIGHUP, true}, {"KILL", unix.SIGKILL, true}, {"SIGFOO", 0, false}}
	for _, tt := range tests {
		got, err := ParseSignal(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
