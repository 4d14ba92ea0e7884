// Package gittest builds real Git repositories and servers for the tests of
// gitsync and its users: the git CLI in temp dirs, git http-backend behind an
// httptest server with basic auth, an in-process SSH server running
// git-upload-pack, and an SSH commit signer.
package gittest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// Env is the environment every git command runs with: no user or system
// configuration, a fixed identity, and dates that move forward one second
// per commit so hashes do not depend on the wall clock.
func Env(extra ...string) []string {
	env := []string{
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=Ada Lovelace",
		"GIT_AUTHOR_EMAIL=ada@example.com",
		"GIT_COMMITTER_NAME=Ada Lovelace",
		"GIT_COMMITTER_EMAIL=ada@example.com",
		"GIT_TERMINAL_PROMPT=0",
		"HOME=" + os.TempDir(),
		"PATH=" + os.Getenv("PATH"),
	}
	return append(env, extra...)
}

// Git runs git in dir and returns its trimmed standard output; it fails the
// test on error, with stderr.
func Git(tb testing.TB, dir string, args ...string) string {
	tb.Helper()
	out, err := RunGit(dir, nil, args...)
	if err != nil {
		tb.Fatalf("git %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// RunGit runs git in dir with stdin and returns its trimmed output.
func RunGit(dir string, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = Env()
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// Repo is a non-bare repository on branch main in a temp dir.
type Repo struct {
	Dir string
	tb  testing.TB
	n   int
}

// NewRepo creates an empty repository with main as its initial branch.
func NewRepo(tb testing.TB) *Repo {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "repo")
	if err := os.Mkdir(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	Git(tb, dir, "init", "-q", "-b", "main")
	return &Repo{Dir: dir, tb: tb}
}

// Git runs git in the repository.
func (r *Repo) Git(args ...string) string {
	r.tb.Helper()
	return Git(r.tb, r.Dir, args...)
}

// Commit writes files (slash paths to content; content [Delete] removes the
// path) and commits with msg. It returns the new commit's hash.
func (r *Repo) Commit(msg string, files map[string]string) string {
	r.tb.Helper()
	r.write(files)
	r.n++
	date := time.Date(2026, 1, 1, 0, 0, r.n, 0, time.UTC).Format(time.RFC3339)
	cmd := exec.Command("git", "commit", "-q", "--allow-empty", "-m", msg)
	cmd.Dir = r.Dir
	cmd.Env = Env("GIT_AUTHOR_DATE="+date, "GIT_COMMITTER_DATE="+date)
	if out, err := cmd.CombinedOutput(); err != nil {
		r.tb.Fatalf("git commit: %v: %s", err, out)
	}
	return r.Git("rev-parse", "HEAD")
}

// Delete is the content that makes Commit remove a file.
const Delete = "\x00delete"

func (r *Repo) write(files map[string]string) {
	r.tb.Helper()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join(r.Dir, filepath.FromSlash(name))
		if files[name] == Delete {
			r.Git("rm", "-q", "-r", "--", name)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			r.tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(files[name]), 0o644); err != nil {
			r.tb.Fatal(err)
		}
		r.Git("add", "--", name)
	}
}

// NewSSHKey returns a fresh ed25519 key as a signer and as an OpenSSH
// private key file written to dir.
func NewSSHKey(tb testing.TB, dir, name string) (ssh.Signer, string) {
	tb.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		tb.Fatal(err)
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(file+".pub", ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o644); err != nil {
		tb.Fatal(err)
	}
	return signer, file
}

// SSHSigner signs git objects the way `git -c gpg.format=ssh` does: an
// armored SSHSIG in namespace "git" over SHA-512 of the payload. It is a
// go-git Signer (CommitOptions.Signer). The encoding is written here
// independently of gitsync's verifier so each checks the other.
type SSHSigner struct {
	Signer ssh.Signer
}

// Sign returns the armored signature of message.
func (s SSHSigner) Sign(message io.Reader) ([]byte, error) {
	h := sha512.New()
	if _, err := io.Copy(h, message); err != nil {
		return nil, err
	}
	var signed bytes.Buffer
	signed.WriteString("SSHSIG")
	putString(&signed, []byte("git"))
	putString(&signed, nil)
	putString(&signed, []byte("sha512"))
	putString(&signed, h.Sum(nil))
	sig, err := s.Signer.Sign(rand.Reader, signed.Bytes())
	if err != nil {
		return nil, err
	}
	var blob bytes.Buffer
	blob.WriteString("SSHSIG")
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], 1)
	blob.Write(v[:])
	putString(&blob, s.Signer.PublicKey().Marshal())
	putString(&blob, []byte("git"))
	putString(&blob, nil)
	putString(&blob, []byte("sha512"))
	putString(&blob, ssh.Marshal(sig))
	enc := base64.StdEncoding.EncodeToString(blob.Bytes())
	var out strings.Builder
	out.WriteString("-----BEGIN SSH SIGNATURE-----\n")
	for len(enc) > 70 {
		out.WriteString(enc[:70] + "\n")
		enc = enc[70:]
	}
	out.WriteString(enc + "\n-----END SSH SIGNATURE-----\n")
	return []byte(out.String()), nil
}

func putString(b *bytes.Buffer, s []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(s)))
	b.Write(n[:])
	b.Write(s)
}

// FastImport creates a bare repository in dir with n linear commits on
// main, each changing small files, through `git fast-import`: thousands of
// commits take a second instead of minutes of `git commit`.
func FastImport(tb testing.TB, dir string, n int) {
	tb.Helper()
	Git(tb, "", "init", "-q", "--bare", "-b", "main", dir)
	if _, err := RunGit(dir, fastImportStream("refs/heads/main", "", n), "fast-import", "--quiet"); err != nil {
		tb.Fatalf("git fast-import: %v", err)
	}
}

// FastCommits appends n commits to branch main of the repository through
// `git fast-import` and returns the new tip. The work tree is not updated.
func (r *Repo) FastCommits(n int) string {
	r.tb.Helper()
	tip := r.Git("rev-parse", "refs/heads/main")
	if _, err := RunGit(r.Dir, fastImportStream("refs/heads/main", tip, n), "fast-import", "--quiet"); err != nil {
		r.tb.Fatalf("git fast-import: %v", err)
	}
	return r.Git("rev-parse", "refs/heads/main")
}

func fastImportStream(ref, from string, n int) *bytes.Buffer {
	var stream bytes.Buffer
	for i := 1; i <= n; i++ {
		content := fmt.Sprintf("ctx: web: replicas: %d\n", i)
		fmt.Fprintf(&stream, "commit %s\nmark :%d\ncommitter Ada Lovelace <ada@example.com> %d +0000\n", ref, i, 1767225600+i)
		msg := fmt.Sprintf("commit %d", i)
		fmt.Fprintf(&stream, "data %d\n%s\n", len(msg), msg)
		switch {
		case i > 1:
			fmt.Fprintf(&stream, "from :%d\n", i-1)
		case from != "":
			fmt.Fprintf(&stream, "from %s\n", from)
		}
		fmt.Fprintf(&stream, "M 100644 inline ctx/web.cue\ndata %d\n%s\n", len(content), content)
		fmt.Fprintf(&stream, "M 100644 inline history/%05d.txt\ndata %d\n%s\n\n", i%500, len(content), content)
	}
	return &stream
}
