package gitsync

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ctxos/ctxos/gitsync/internal/gittest"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

const testPassword = "s3cr3t-Pa55word-7f1c"

func writeSecret(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHTTPAuth(t *testing.T) {
	repo := gittest.NewRepo(t)
	want := repo.Commit("one", map[string]string{"a.cue": "a: 1\n"})
	srv := gittest.HTTPServer(t, filepath.Dir(repo.Dir), "deploy", testPassword)
	t.Setenv("CTXOS_TEST_TOKEN", testPassword+"\n")
	t.Setenv("CTXOS_TEST_WRONG", "wrong-"+testPassword)

	tests := []struct {
		name    string
		url     string
		auth    Auth
		wantErr error
	}{
		{"password file", srv.URL + "/repo", Auth{Username: "deploy", PasswordFile: writeSecret(t, testPassword+"\n")}, nil},
		{"token env", srv.URL + "/repo", Auth{Username: "deploy", TokenEnv: "CTXOS_TEST_TOKEN"}, nil},
		{"userinfo in URL", strings.Replace(srv.URL, "http://", "http://deploy:"+testPassword+"@", 1) + "/repo", Auth{}, nil},
		{"no credentials", srv.URL + "/repo", Auth{}, ErrAuth},
		{"wrong password", srv.URL + "/repo", Auth{Username: "deploy", PasswordFile: writeSecret(t, "wrong-"+testPassword)}, ErrAuth},
		{"wrong token", srv.URL + "/repo", Auth{Username: "deploy", TokenEnv: "CTXOS_TEST_WRONG"}, ErrAuth},
		{"wrong password in URL", strings.Replace(srv.URL, "http://", "http://deploy:wrong-"+testPassword+"@", 1) + "/repo", Auth{}, ErrAuth},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			src := newSource(t, tt.url)
			src.Auth = tt.auth
			src.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			rev, err := src.Fetch(t.Context())
			if tt.wantErr == nil {
				if err != nil || rev.Commit != want {
					t.Fatalf("fetch = %s, %v; want %s", rev.Commit, err, want)
				}
			} else if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			} else {
				t.Logf("error as returned: %v", err)
			}
			// The secret shows up nowhere: not in the error, not in logs,
			// not in the revision.
			for where, text := range map[string]string{"error": errString(err), "logs": logs.String(), "revision": strings.Join([]string{rev.Commit, rev.Ref, rev.Subject}, " ")} {
				if strings.Contains(text, testPassword) {
					t.Errorf("secret in %s: %s", where, text)
				}
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestAuthConfigErrors(t *testing.T) {
	t.Parallel()
	empty := writeSecret(t, "\n")
	tests := []struct {
		name string
		url  string
		auth Auth
		text string
	}{
		{"two secrets", "https://git.example.com/r", Auth{TokenEnv: "A", PasswordEnv: "B"}, "only one"},
		{"empty token file", "https://git.example.com/r", Auth{TokenFile: empty}, "file " + empty + " is empty"},
		{"unset env", "https://git.example.com/r", Auth{TokenEnv: "CTXOS_TEST_UNSET_VAR"}, "CTXOS_TEST_UNSET_VAR"},
		{"missing token file", "https://git.example.com/r", Auth{TokenFile: "/nonexistent/token"}, "/nonexistent/token"},
		{"plain http off loopback", "http://git.example.com/r", Auth{TokenFile: writeSecret(t, "tok")}, "plain http"},
		{"ssh key for https", "https://git.example.com/r", Auth{SSHKeyFile: "/k"}, "SSH key"},
		{"token for ssh", "ssh://git@git.example.com/r", Auth{TokenEnv: "X"}, "ssh URL"},
		{"username without secret", "https://git.example.com/r", Auth{Username: "bob"}, "without a password"},
		{"missing ssh key", "git@git.example.com:org/r.git", Auth{SSHKeyFile: "/nonexistent/id"}, "/nonexistent/id"},
		{"bad ssh key", "git@git.example.com:org/r.git", Auth{SSHKeyFile: writeSecret(t, "not a key")}, "SSH key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := &Source{URL: tt.url, CacheDir: t.TempDir(), Auth: tt.auth}
			_, err := src.Fetch(t.Context())
			if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("err = %v, want ErrAuth containing %q", err, tt.text)
			}
		})
	}
}

func TestSSHAuth(t *testing.T) {
	repo := gittest.NewRepo(t)
	want := repo.Commit("one", map[string]string{"state/a.cue": "a: 1\n"})
	keys := t.TempDir()
	client, keyFile := gittest.NewSSHKey(t, keys, "id_ed25519")
	srv := gittest.NewSSHServer(t, client.PublicKey())
	_, otherKeyFile := gittest.NewSSHKey(t, keys, "other")
	otherHost, _ := gittest.NewSSHKey(t, keys, "otherhost")
	wrongHosts := filepath.Join(keys, "wrong_known_hosts")
	line := knownhosts.Line([]string{knownhosts.Normalize(srv.Addr)}, otherHost.PublicKey())
	if err := os.WriteFile(wrongHosts, []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	emptyHosts := writeSecret(t, "")

	url := "ssh://git@" + srv.Addr + repo.Dir
	tests := []struct {
		name    string
		auth    Auth
		wantErr error
	}{
		{"key and known host", Auth{SSHKeyFile: keyFile, KnownHostsFile: srv.KnownHosts}, nil},
		{"unknown client key", Auth{SSHKeyFile: otherKeyFile, KnownHostsFile: srv.KnownHosts}, ErrAuth},
		{"wrong host key", Auth{SSHKeyFile: keyFile, KnownHostsFile: wrongHosts}, ErrUnreachable},
		{"host not in known_hosts", Auth{SSHKeyFile: keyFile, KnownHostsFile: emptyHosts}, ErrUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newSource(t, url)
			src.Path = "state"
			src.Auth = tt.auth
			rev, err := src.Fetch(t.Context())
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("fetch succeeded, want %v", tt.wantErr)
				}
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("err = %v, want %v", err, tt.wantErr)
				}
				t.Logf("error as returned: %v", err)
				return
			}
			if err != nil || rev.Commit != want {
				t.Fatalf("fetch = %s, %v; want %s", rev.Commit, err, want)
			}
			if err := src.Checkout(t.Context(), rev.Commit, t.TempDir()); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The server key really is what known_hosts pins.
	if got := ssh.FingerprintSHA256(srv.HostKey); got == ssh.FingerprintSHA256(otherHost.PublicKey()) {
		t.Fatal("host keys collide")
	}
}

func TestDisplayURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"https://user:" + testPassword + "@git.example.com/org/repo.git", "https://git.example.com/org/repo.git"},
		{"https://" + testPassword + "@git.example.com/r", "https://git.example.com/r"},
		{"ssh://git@host:2222/r.git", "ssh://host:2222/r.git"},
		{"git@github.com:org/repo.git", "git@github.com:org/repo.git"},
		{"git:" + testPassword + "@github.com:org/repo.git", "git@github.com:org/repo.git"},
		{"/srv/git/repo", "/srv/git/repo"},
		{"https://u:p a@bad host/x", "https://bad host/x"},
	}
	for _, tt := range tests {
		if got := displayURL(tt.in); got != tt.want {
			t.Errorf("displayURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	msg := scrub(`parse "https://u:`+testPassword+`@h/x": bad; token `+testPassword, []string{testPassword})
	if strings.Contains(msg, testPassword) {
		t.Errorf("scrub left the secret: %s", msg)
	}
}

func TestSSHUnreachable(t *testing.T) {
	t.Parallel()
	keys := t.TempDir()
	_, keyFile := gittest.NewSSHKey(t, keys, "id")
	known := writeSecret(t, "")
	hang := hangingListener(t)
	src := newSource(t, "ssh://git@"+hang+"/repo.git")
	src.Auth = Auth{SSHKeyFile: keyFile, KnownHostsFile: known}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	_, err := src.Fetch(ctx)
	t.Logf("hanging ssh: %v", err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("hanging ssh server: err = %v, want DeadlineExceeded", err)
	}

	// A closed port fails at once.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	src = newSource(t, "ssh://git@"+closed+"/repo.git")
	src.Auth = Auth{SSHKeyFile: keyFile, KnownHostsFile: known}
	if _, err := src.Fetch(t.Context()); !errors.Is(err, ErrUnreachable) {
		t.Errorf("closed port: err = %v, want ErrUnreachable", err)
	}
}
