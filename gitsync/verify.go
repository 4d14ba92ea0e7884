package gitsync

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"golang.org/x/crypto/ssh"
)

const (
	sshSigBegin = "-----BEGIN SSH SIGNATURE-----"
	sshSigEnd   = "-----END SSH SIGNATURE-----"
	pgpSigBegin = "-----BEGIN PGP SIGNATURE-----"
	// sshSigNamespace is the namespace git signs commits in
	// (`ssh-keygen -Y sign -n git`).
	sshSigNamespace = "git"
)

// Verifier decides whether a commit is signed by a trusted key. It is built
// by ParseVerify from `openpgp:KEYRING` (an armored public keyring) or
// `ssh:ALLOWED_SIGNERS` (an OpenSSH allowed_signers file, as git's
// gpg.ssh.allowedSignersFile). A Verifier is immutable and safe for
// concurrent use.
type Verifier struct {
	spec    string
	keyring string          // armored, for openpgp
	signers []allowedSigner // for ssh
}

type allowedSigner struct {
	principals  string
	key         ssh.PublicKey
	namespaces  []string // empty: any namespace
	validAfter  time.Time
	validBefore time.Time
}

// ParseVerify reads the trust material named by spec: "openpgp:PATH" or
// "ssh:PATH". Errors name the file and, for allowed_signers, the line.
func ParseVerify(spec string) (*Verifier, error) {
	kind, file, ok := strings.Cut(spec, ":")
	if !ok || file == "" {
		return nil, fmt.Errorf("verify %q: want openpgp:KEYRING or ssh:ALLOWED_SIGNERS", spec)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	v := &Verifier{spec: spec}
	switch kind {
	case "openpgp", "gpg", "pgp":
		keys, err := openpgp.ReadArmoredKeyRing(bytes.NewReader(data))
		if err != nil {
			return nil, fmt.Errorf("verify: keyring %s: %w", file, err)
		}
		if len(keys) == 0 {
			return nil, fmt.Errorf("verify: keyring %s holds no keys", file)
		}
		v.keyring = string(data)
	case "ssh":
		v.signers, err = parseAllowedSigners(file, data)
		if err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("verify %q: unknown kind %q (want openpgp or ssh)", spec, kind)
	}
	return v, nil
}

// String returns the spec the Verifier was parsed from.
func (v *Verifier) String() string { return v.spec }

// Verify checks the signature of commit and returns who signed it: the
// OpenPGP identity or the allowed_signers principals, with the key
// fingerprint. ErrUnsigned for no signature; ErrUntrusted naming the key
// fingerprint for a key not trusted (or a signature of the other kind);
// ErrBadSignature for a signature that does not match the commit.
func (v *Verifier) Verify(commit *object.Commit) (string, error) {
	sig := strings.TrimSpace(commit.PGPSignature)
	if sig == "" {
		return "", fmt.Errorf("commit %s: %w", commit.Hash, ErrUnsigned)
	}
	payload, err := signedPayload(commit)
	if err != nil {
		return "", fmt.Errorf("commit %s: %w", commit.Hash, err)
	}
	if v.keyring != "" {
		return v.verifyPGP(commit, sig, payload)
	}
	return v.verifySSH(commit, sig, payload)
}

func signedPayload(commit *object.Commit) ([]byte, error) {
	encoded := &plumbing.MemoryObject{}
	if err := commit.EncodeWithoutSignature(encoded); err != nil {
		return nil, err
	}
	r, err := encoded.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func (v *Verifier) verifyPGP(commit *object.Commit, sig string, payload []byte) (string, error) {
	if strings.HasPrefix(sig, sshSigBegin) {
		return "", fmt.Errorf("commit %s: %w: signed with an SSH key, %s expects OpenPGP", commit.Hash, ErrUntrusted, v.spec)
	}
	entity, err := commit.Verify(v.keyring)
	if err != nil {
		if errors.Is(err, pgperrors.ErrUnknownIssuer) {
			return "", fmt.Errorf("commit %s: %w: OpenPGP key %s is not in %s", commit.Hash, ErrUntrusted, pgpIssuer(sig), v.spec)
		}
		return "", fmt.Errorf("commit %s: %w: %v", commit.Hash, ErrBadSignature, err)
	}
	name := ""
	for _, id := range entity.Identities {
		if id.SelfSignature != nil && id.SelfSignature.IsPrimaryId != nil && *id.SelfSignature.IsPrimaryId {
			name = id.Name
			break
		}
		if name == "" || id.Name < name {
			name = id.Name
		}
	}
	return strings.TrimSpace(fmt.Sprintf("%s (openpgp %X)", name, entity.PrimaryKey.Fingerprint)), nil
}

// pgpIssuer names the key that made an OpenPGP signature, for the error
// that says it is not trusted.
func pgpIssuer(armored string) string {
	block, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return "(unreadable signature)"
	}
	p, err := packet.Read(block.Body)
	if err != nil {
		return "(unreadable signature)"
	}
	s, ok := p.(*packet.Signature)
	if !ok {
		return "(unreadable signature)"
	}
	switch {
	case len(s.IssuerFingerprint) > 0:
		return fmt.Sprintf("%X", s.IssuerFingerprint)
	case s.IssuerKeyId != nil:
		return fmt.Sprintf("%016X", *s.IssuerKeyId)
	}
	return "(no issuer in signature)"
}

// sshSignature is the SSHSIG envelope (OpenSSH PROTOCOL.sshsig).
type sshSignature struct {
	publicKey ssh.PublicKey
	namespace string
	hashAlg   string
	signature *ssh.Signature
}

func (v *Verifier) verifySSH(commit *object.Commit, sig string, payload []byte) (string, error) {
	if strings.HasPrefix(sig, pgpSigBegin) {
		return "", fmt.Errorf("commit %s: %w: signed with OpenPGP, %s expects SSH", commit.Hash, ErrUntrusted, v.spec)
	}
	env, err := parseSSHSignature(sig)
	if err != nil {
		return "", fmt.Errorf("commit %s: %w: %v", commit.Hash, ErrBadSignature, err)
	}
	fp := ssh.FingerprintSHA256(env.publicKey)
	if env.namespace != sshSigNamespace {
		return "", fmt.Errorf("commit %s: %w: signature namespace %q, want %q", commit.Hash, ErrBadSignature, env.namespace, sshSigNamespace)
	}
	if err := env.verify(payload); err != nil {
		return "", fmt.Errorf("commit %s: %w: key %s: %v", commit.Hash, ErrBadSignature, fp, err)
	}
	if _, ok := env.publicKey.(*ssh.Certificate); ok {
		return "", fmt.Errorf("commit %s: %w: signed by certificate %s; certificate authorities in allowed signers are not supported", commit.Hash, ErrUntrusted, fp)
	}
	key := env.publicKey.Marshal()
	when := commit.Committer.When
	for _, s := range v.signers {
		if !bytes.Equal(s.key.Marshal(), key) {
			continue
		}
		if len(s.namespaces) > 0 && !contains(s.namespaces, sshSigNamespace) {
			continue
		}
		if !s.validAfter.IsZero() && when.Before(s.validAfter) {
			continue
		}
		if !s.validBefore.IsZero() && when.After(s.validBefore) {
			continue
		}
		return fmt.Sprintf("%s (ssh %s)", s.principals, fp), nil
	}
	return "", fmt.Errorf("commit %s: %w: SSH key %s is not allowed for git signatures at %s by %s",
		commit.Hash, ErrUntrusted, fp, when.UTC().Format(time.RFC3339), v.spec)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// verify checks the envelope's signature over message.
func (e *sshSignature) verify(message []byte) error {
	var h hash.Hash
	switch e.hashAlg {
	case "sha256":
		h = sha256.New()
	case "sha512":
		h = sha512.New()
	default:
		return fmt.Errorf("unsupported hash algorithm %q", e.hashAlg)
	}
	// ssh-keygen refuses SHA-1 RSA signatures in SSHSIG; so do we.
	if e.signature.Format == ssh.KeyAlgoRSA {
		return errors.New("ssh-rsa (SHA-1) signatures are refused")
	}
	h.Write(message)
	return e.publicKey.Verify(SSHSignedData(e.namespace, e.hashAlg, h.Sum(nil)), e.signature)
}

// SSHSignedData is the blob an SSHSIG signature is computed over: the magic
// preamble, namespace, reserved field, hash algorithm and the hash of the
// message (OpenSSH PROTOCOL.sshsig). Exported so signers (tests, tools) and
// this verifier share one encoding.
func SSHSignedData(namespace, hashAlg string, digest []byte) []byte {
	var b bytes.Buffer
	b.WriteString("SSHSIG")
	writeSSHString(&b, []byte(namespace))
	writeSSHString(&b, nil)
	writeSSHString(&b, []byte(hashAlg))
	writeSSHString(&b, digest)
	return b.Bytes()
}

func writeSSHString(b *bytes.Buffer, s []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(s)))
	b.Write(n[:])
	b.Write(s)
}

// parseSSHSignature decodes an armored SSHSIG.
func parseSSHSignature(armored string) (*sshSignature, error) {
	body, ok := strings.CutPrefix(strings.TrimSpace(armored), sshSigBegin)
	if !ok {
		return nil, errors.New("not an SSH signature")
	}
	body, ok = strings.CutSuffix(body, sshSigEnd)
	if !ok {
		return nil, errors.New("SSH signature armor is not terminated")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(body), ""))
	if err != nil {
		return nil, fmt.Errorf("SSH signature armor: %v", err)
	}
	r := sshReader{b: raw}
	magic := r.bytes(6)
	version := r.uint32()
	pub := r.string()
	namespace := r.string()
	_ = r.string() // reserved
	hashAlg := r.string()
	sigBlob := r.string()
	if r.err != nil {
		return nil, fmt.Errorf("SSH signature: %v", r.err)
	}
	if string(magic) != "SSHSIG" {
		return nil, errors.New("SSH signature: bad magic")
	}
	if version != 1 {
		return nil, fmt.Errorf("SSH signature: unsupported version %d", version)
	}
	key, err := ssh.ParsePublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("SSH signature public key: %v", err)
	}
	sig := new(ssh.Signature)
	if err := ssh.Unmarshal(sigBlob, sig); err != nil {
		return nil, fmt.Errorf("SSH signature blob: %v", err)
	}
	return &sshSignature{publicKey: key, namespace: string(namespace), hashAlg: string(hashAlg), signature: sig}, nil
}

// sshReader reads SSH wire encoding, keeping the first error.
type sshReader struct {
	b   []byte
	err error
}

func (r *sshReader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.err = errors.New("truncated")
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *sshReader) uint32() uint32 {
	b := r.bytes(4)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (r *sshReader) string() []byte {
	n := r.uint32()
	if n > uint32(len(r.b)) {
		r.err = errors.New("truncated")
		return nil
	}
	return r.bytes(int(n))
}

// parseAllowedSigners reads an OpenSSH allowed_signers file:
//
//	principals [options] keytype base64-key [comment]
//
// Options understood: namespaces="a,b", valid-after=, valid-before=.
// cert-authority lines are skipped: they trust a CA, and certificate
// signatures are not supported.
func parseAllowedSigners(file string, data []byte) ([]allowedSigner, error) {
	var signers []allowedSigner
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		where := fmt.Sprintf("%s:%d", file, n)
		principals, rest, err := cutPrincipals(line)
		if err != nil {
			return nil, fmt.Errorf("verify: %s: %v", where, err)
		}
		key, _, options, _, err := ssh.ParseAuthorizedKey([]byte(rest))
		if err != nil {
			return nil, fmt.Errorf("verify: %s: key: %v", where, err)
		}
		s := allowedSigner{principals: principals, key: key}
		ca := false
		for _, opt := range options {
			name, value, _ := strings.Cut(opt, "=")
			value = strings.Trim(value, `"`)
			switch strings.ToLower(name) {
			case "cert-authority":
				ca = true
			case "namespaces":
				s.namespaces = strings.Split(value, ",")
			case "valid-after":
				if s.validAfter, err = parseSSHTime(value); err != nil {
					return nil, fmt.Errorf("verify: %s: valid-after: %v", where, err)
				}
			case "valid-before":
				if s.validBefore, err = parseSSHTime(value); err != nil {
					return nil, fmt.Errorf("verify: %s: valid-before: %v", where, err)
				}
			default:
				return nil, fmt.Errorf("verify: %s: unknown option %q", where, name)
			}
		}
		if !ca {
			signers = append(signers, s)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("verify: %s: %w", file, err)
	}
	if len(signers) == 0 {
		return nil, fmt.Errorf("verify: %s lists no signer keys", file)
	}
	return signers, nil
}

func cutPrincipals(line string) (principals, rest string, err error) {
	if strings.HasPrefix(line, `"`) {
		end := strings.Index(line[1:], `"`)
		if end < 0 {
			return "", "", errors.New("unterminated quoted principals")
		}
		return line[1 : end+1], strings.TrimSpace(line[end+2:]), nil
	}
	i := strings.IndexAny(line, " \t")
	if i < 0 {
		return "", "", errors.New("want principals followed by a key")
	}
	return line[:i], strings.TrimSpace(line[i:]), nil
}

// parseSSHTime reads the YYYYMMDD[HHMM[SS]][Z] timestamps of
// allowed_signers; without Z the time is local, as in ssh-keygen.
func parseSSHTime(s string) (time.Time, error) {
	loc := time.Local
	if t, ok := strings.CutSuffix(s, "Z"); ok {
		s, loc = t, time.UTC
	}
	layouts := map[int]string{8: "20060102", 12: "200601021504", 14: "20060102150405"}
	layout, ok := layouts[len(s)]
	if !ok {
		return time.Time{}, fmt.Errorf("%q: want YYYYMMDD[HHMM[SS]][Z]", s)
	}
	t, err := time.ParseInLocation(layout, s, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q: want YYYYMMDD[HHMM[SS]][Z]", s)
	}
	return t, nil
}
