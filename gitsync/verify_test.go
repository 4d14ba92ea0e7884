package gitsync

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ctxos/ctxos/gitsync/internal/gittest"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
	"golang.org/x/crypto/ssh"
)

// signedRepo is a go-git repository whose commits are signed by sign.
type signedRepo struct {
	dir  string
	repo *git.Repository
	when time.Time
}

func newSignedRepo(t *testing.T) *signedRepo {
	t.Helper()
	dir := t.TempDir()
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	return &signedRepo{dir: dir, repo: repo, when: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

// commit writes a file and commits it, signed as opts says.
func (r *signedRepo) commit(t *testing.T, msg string, opts git.CommitOptions) *object.Commit {
	t.Helper()
	if err := os.WriteFile(filepath.Join(r.dir, "state.cue"), []byte(msg+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wt, err := r.repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wt.Add("state.cue"); err != nil {
		t.Fatal(err)
	}
	r.when = r.when.Add(time.Minute)
	opts.Author = &object.Signature{Name: "Ada Lovelace", Email: "ada@example.com", When: r.when}
	h, err := wt.Commit(msg, &opts)
	if err != nil {
		t.Fatal(err)
	}
	c, err := r.repo.CommitObject(h)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newPGPKey(t *testing.T, name string) (*openpgp.Entity, string) {
	t.Helper()
	e, err := openpgp.NewEntity(name, "", strings.ToLower(name)+"@example.com", nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := armor.Encode(&buf, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Serialize(w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	file := filepath.Join(t.TempDir(), name+".asc")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return e, file
}

func TestVerifyOpenPGP(t *testing.T) {
	t.Parallel()
	trusted, keyring := newPGPKey(t, "Ada")
	stranger, _ := newPGPKey(t, "Mallory")
	v, err := ParseVerify("openpgp:" + keyring)
	if err != nil {
		t.Fatal(err)
	}
	r := newSignedRepo(t)
	good := r.commit(t, "signed by ada", git.CommitOptions{SignKey: trusted})
	untrusted := r.commit(t, "signed by mallory", git.CommitOptions{SignKey: stranger})
	unsigned := r.commit(t, "unsigned", git.CommitOptions{})
	tampered := r.commit(t, "to be tampered", git.CommitOptions{SignKey: trusted})
	tampered.Message = "tampered\n"
	sshSigned := r.commit(t, "ssh", git.CommitOptions{Signer: gittest.SSHSigner{Signer: newSSHSigner(t)}})

	signer, err := v.Verify(good)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Ada <ada@example.com>"; !strings.Contains(signer, want) || !strings.Contains(signer, fingerprintHex(trusted)) {
		t.Errorf("signer = %q, want %q and the fingerprint", signer, want)
	}
	tests := []struct {
		name   string
		commit *object.Commit
		want   error
		text   string
	}{
		{"untrusted key", untrusted, ErrUntrusted, fingerprintHex(stranger)},
		{"unsigned", unsigned, ErrUnsigned, unsigned.Hash.String()},
		{"tampered", tampered, ErrBadSignature, ""},
		{"ssh signature", sshSigned, ErrUntrusted, "SSH"},
	}
	for _, tt := range tests {
		_, err := v.Verify(tt.commit)
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("%s: err = %v, want %v containing %q", tt.name, err, tt.want, tt.text)
		}
	}
}

func fingerprintHex(e *openpgp.Entity) string {
	return fmt.Sprintf("%X", e.PrimaryKey.Fingerprint)
}

func newSSHSigner(t *testing.T) ssh.Signer {
	t.Helper()
	s, _ := gittest.NewSSHKey(t, t.TempDir(), "id")
	return s
}

func writeAllowedSigners(t *testing.T, lines ...string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "allowed_signers")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

func authorized(k ssh.PublicKey) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func TestVerifySSH(t *testing.T) {
	t.Parallel()
	ada := newSSHSigner(t)
	mallory := newSSHSigner(t)
	old := newSSHSigner(t)
	fileOnly := newSSHSigner(t)
	pgpKey, _ := newPGPKey(t, "Ada")
	allowed := writeAllowedSigners(t,
		"# team keys",
		`ada@example.com,ada@ctxos.dev namespaces="git" `+authorized(ada.PublicKey())+" ada laptop",
		`"old@example.com" valid-before="20200101Z" `+authorized(old.PublicKey()),
		`file@example.com namespaces="file" `+authorized(fileOnly.PublicKey()),
	)
	v, err := ParseVerify("ssh:" + allowed)
	if err != nil {
		t.Fatal(err)
	}
	r := newSignedRepo(t)
	good := r.commit(t, "signed by ada", git.CommitOptions{Signer: gittest.SSHSigner{Signer: ada}})
	signer, err := v.Verify(good)
	if err != nil {
		t.Fatal(err)
	}
	if want := "ada@example.com,ada@ctxos.dev (ssh " + ssh.FingerprintSHA256(ada.PublicKey()) + ")"; signer != want {
		t.Errorf("signer = %q, want %q", signer, want)
	}

	tampered := r.commit(t, "tampered later", git.CommitOptions{Signer: gittest.SSHSigner{Signer: ada}})
	tampered.Message = "something else\n"
	tests := []struct {
		name   string
		commit *object.Commit
		want   error
		text   string
	}{
		{"unknown key", r.commit(t, "mallory", git.CommitOptions{Signer: gittest.SSHSigner{Signer: mallory}}), ErrUntrusted, ssh.FingerprintSHA256(mallory.PublicKey())},
		{"expired key", r.commit(t, "old", git.CommitOptions{Signer: gittest.SSHSigner{Signer: old}}), ErrUntrusted, ssh.FingerprintSHA256(old.PublicKey())},
		{"key for another namespace", r.commit(t, "file", git.CommitOptions{Signer: gittest.SSHSigner{Signer: fileOnly}}), ErrUntrusted, "not allowed"},
		{"unsigned", r.commit(t, "unsigned", git.CommitOptions{}), ErrUnsigned, ""},
		{"openpgp signature", r.commit(t, "pgp", git.CommitOptions{SignKey: pgpKey}), ErrUntrusted, "OpenPGP"},
		{"tampered", tampered, ErrBadSignature, ssh.FingerprintSHA256(ada.PublicKey())},
	}
	for _, tt := range tests {
		_, err := v.Verify(tt.commit)
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("%s: err = %v, want %v containing %q", tt.name, err, tt.want, tt.text)
		}
	}
}

func TestParseSSHSignatureMalformed(t *testing.T) {
	t.Parallel()
	r := newSignedRepo(t)
	c := r.commit(t, "x", git.CommitOptions{Signer: gittest.SSHSigner{Signer: newSSHSigner(t)}})
	v, err := ParseVerify("ssh:" + writeAllowedSigners(t, "a@b "+authorized(newSSHSigner(t).PublicKey())))
	if err != nil {
		t.Fatal(err)
	}
	good := c.PGPSignature
	for name, sig := range map[string]string{
		"not terminated": strings.TrimSuffix(strings.TrimSpace(good), sshSigEnd),
		"bad base64":     sshSigBegin + "\n!!!!\n" + sshSigEnd,
		"truncated":      sshSigBegin + "\nU1NIU0lH\n" + sshSigEnd, // "SSHSIG" only
		"bad magic":      sshSigBegin + "\nWFhYWFhYAAAAAQ==\n" + sshSigEnd,
	} {
		c.PGPSignature = sig
		if _, err := v.Verify(c); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: err = %v, want ErrBadSignature", name, err)
		}
	}
}

// TestVerifySSHInteropGit proves the SSHSIG code agrees with real git and
// ssh-keygen both ways: a commit signed by `git commit -S` verifies here,
// and a commit signed by gittest.SSHSigner passes `git verify-commit`.
func TestVerifySSHInteropGit(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed")
	}
	keyDir := t.TempDir()
	signer, keyFile := gittest.NewSSHKey(t, keyDir, "id_ed25519")
	allowed := writeAllowedSigners(t, "ada@example.com "+authorized(signer.PublicKey()))
	v, err := ParseVerify("ssh:" + allowed)
	if err != nil {
		t.Fatal(err)
	}

	repo := gittest.NewRepo(t)
	repo.Git("config", "gpg.format", "ssh")
	repo.Git("config", "user.signingkey", keyFile)
	repo.Git("config", "gpg.ssh.allowedSignersFile", allowed)
	if err := os.WriteFile(filepath.Join(repo.Dir, "a.cue"), []byte("a: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo.Git("add", "a.cue")
	repo.Git("commit", "-q", "-S", "-m", "signed by git")
	head := repo.Git("rev-parse", "HEAD")

	src := newSource(t, repo.Dir)
	src.Verify = v
	rev, err := src.Fetch(t.Context())
	if err != nil {
		t.Fatalf("commit signed by git does not verify: %v", err)
	}
	if rev.Commit != head || !rev.Signed || !strings.HasPrefix(rev.Signer, "ada@example.com (ssh SHA256:") {
		t.Errorf("revision = %+v", rev)
	}

	// The other way: go-git + gittest.SSHSigner, checked by git itself.
	gr, err := git.PlainOpen(repo.Dir)
	if err != nil {
		t.Fatal(err)
	}
	wt, err := gr.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	h, err := wt.Commit("signed by go-git", &git.CommitOptions{
		AllowEmptyCommits: true,
		Author:            &object.Signature{Name: "Ada Lovelace", Email: "ada@example.com", When: time.Now()},
		Signer:            gittest.SSHSigner{Signer: signer},
	})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := gittest.RunGit(repo.Dir, nil, "verify-commit", h.String()); err != nil {
		t.Fatalf("git verify-commit of a gittest.SSHSigner commit: %v %s", err, out)
	}
	rev, err = src.Fetch(t.Context())
	if err != nil || rev.Commit != h.String() {
		t.Fatalf("fetch = %+v, %v", rev, err)
	}
}

func TestFetchRefusesUnverified(t *testing.T) {
	t.Parallel()
	trusted, keyring := newPGPKey(t, "Ada")
	v, err := ParseVerify("openpgp:" + keyring)
	if err != nil {
		t.Fatal(err)
	}
	r := newSignedRepo(t)
	good := r.commit(t, "signed", git.CommitOptions{SignKey: trusted})
	src := newSource(t, r.dir)
	src.Ref = Ref{Branch: "master"}
	src.Verify = v
	rev, err := src.Fetch(t.Context())
	if err != nil || rev.Commit != good.Hash.String() || !rev.Signed || !strings.HasPrefix(rev.Signer, "Ada <ada@example.com> (openpgp ") {
		t.Fatalf("fetch signed = %+v, %v", rev, err)
	}
	bad := r.commit(t, "unsigned on top", git.CommitOptions{})
	rev, err = src.Fetch(t.Context())
	if !errors.Is(err, ErrUnsigned) {
		t.Fatalf("err = %v, want ErrUnsigned", err)
	}
	// The refused commit is described so the syncer can say which one.
	if rev.Commit != bad.Hash.String() || rev.Signer != "" {
		t.Errorf("refused revision = %+v", rev)
	}
}

func TestParseVerifyErrors(t *testing.T) {
	t.Parallel()
	key := authorized(newSSHSigner(t).PublicKey())
	notKeyring := writeAllowedSigners(t, "not a keyring")
	tests := []struct {
		name, spec, text string
	}{
		{"no kind", "keyring.asc", "want openpgp:KEYRING"},
		{"unknown kind", "x509:" + notKeyring, `unknown kind "x509"`},
		{"missing file", "ssh:/nonexistent/allowed", "/nonexistent/allowed"},
		{"bad keyring", "openpgp:" + notKeyring, notKeyring},
		{"bad key line", "ssh:" + writeAllowedSigners(t, "# c", "ada@example.com ssh-ed25519 AAAAnotbase64"), ":2: key"},
		{"unknown option", "ssh:" + writeAllowedSigners(t, "a@b frobnicate=\"1\" "+key), `unknown option "frobnicate"`},
		{"bad timestamp", "ssh:" + writeAllowedSigners(t, "a@b valid-after=\"2024\" "+key), "valid-after"},
		{"principals only", "ssh:" + writeAllowedSigners(t, "a@b"), ":1:"},
		{"unterminated quote", "ssh:" + writeAllowedSigners(t, `"a@b `+key), "unterminated"},
		{"no signers", "ssh:" + writeAllowedSigners(t, "# nobody"), "no signer keys"},
	}
	for _, tt := range tests {
		if _, err := ParseVerify(tt.spec); err == nil || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("%s: err = %v, want one containing %q", tt.name, err, tt.text)
		}
	}
}

func TestParseSSHTime(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Time
	}{
		{"20240102Z", time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)},
		{"202401021530Z", time.Date(2024, 1, 2, 15, 30, 0, 0, time.UTC)},
		{"20240102153045Z", time.Date(2024, 1, 2, 15, 30, 45, 0, time.UTC)},
		{"20240102", time.Date(2024, 1, 2, 0, 0, 0, 0, time.Local)},
	}
	for _, tt := range tests {
		got, err := parseSSHTime(tt.in)
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("parseSSHTime(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "2024", "2024010x", "20241302Z"} {
		if _, err := parseSSHTime(bad); err == nil {
			t.Errorf("parseSSHTime(%q) accepted", bad)
		}
	}
}
