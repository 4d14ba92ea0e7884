package gitsync

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/crypto/ssh"
	"golang.org/x/net/proxy"
)

// Auth says where the credentials for the remote are. Secrets are named by
// file or environment variable, never given inline, so they stay out of
// flags, process listings and configuration dumps; they are read again on
// every fetch so a rotated token is picked up without a restart.
type Auth struct {
	// Username for HTTPS basic auth. With a token it defaults to "git",
	// which GitHub, GitLab and Gitea accept with a personal access token.
	// For SSH it overrides the user of the URL (default "git").
	Username string
	// PasswordFile or PasswordEnv hold an HTTPS password.
	PasswordFile, PasswordEnv string
	// TokenFile or TokenEnv hold an HTTPS access token, sent as the basic
	// auth password.
	TokenFile, TokenEnv string
	// SSHKeyFile is a private key (OpenSSH or PEM) for ssh:// and scp-like
	// URLs. Without it the SSH agent (SSH_AUTH_SOCK) is used.
	SSHKeyFile string
	// SSHKeyPassphraseFile holds the passphrase of an encrypted SSHKeyFile.
	SSHKeyPassphraseFile string
	// KnownHostsFile lists the server's host keys. Without it the usual
	// ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts are used. There is
	// deliberately no way to skip host key checking.
	KnownHostsFile string
}

// IsZero reports whether no credentials are configured.
func (a Auth) IsZero() bool { return a == Auth{} }

// credentials is what an Auth resolves to for one remote: the transport's
// auth method and the secret strings to scrub from any error text.
type credentials struct {
	method  transport.AuthMethod
	secrets []string
	proxy   transport.ProxyOptions
}

// resolve reads the secrets named by a for the endpoint ep. The deadline of
// ctx bounds the SSH dial and handshake, which go-git does not tie to ctx.
func (a Auth) resolve(ctx context.Context, ep *transport.Endpoint) (credentials, error) {
	var creds credentials
	if ep.Password != "" {
		creds.secrets = append(creds.secrets, ep.Password)
	}
	// scp-like "user:secret@host:path" puts the secret in the user name.
	if _, secret, ok := strings.Cut(ep.User, ":"); ok && secret != "" {
		creds.secrets = append(creds.secrets, secret)
	}
	httpSecret := a.PasswordFile != "" || a.PasswordEnv != "" || a.TokenFile != "" || a.TokenEnv != ""
	sshSecret := a.SSHKeyFile != "" || a.SSHKeyPassphraseFile != "" || a.KnownHostsFile != ""
	n := 0
	for _, v := range []string{a.PasswordFile, a.PasswordEnv, a.TokenFile, a.TokenEnv} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		return creds, fmt.Errorf("%w: set only one of password file, password env, token file and token env", ErrAuth)
	}
	switch ep.Protocol {
	case "http", "https":
		if sshSecret {
			return creds, fmt.Errorf("%w: SSH key or known hosts given for a %s URL", ErrAuth, ep.Protocol)
		}
		if !httpSecret {
			if a.Username != "" {
				return creds, fmt.Errorf("%w: username %q given without a password or token", ErrAuth, a.Username)
			}
			// Userinfo in the URL, if any, is used by go-git and its
			// password was recorded above for scrubbing.
			return creds, nil
		}
		secret, err := readSecret(a.PasswordFile, a.PasswordEnv, a.TokenFile, a.TokenEnv)
		if err != nil {
			return creds, err
		}
		creds.secrets = append(creds.secrets, secret)
		if ep.Protocol == "http" && !isLoopback(ep.Host) {
			return creds, fmt.Errorf("%w: refusing to send credentials over plain http to %s (use https)", ErrAuth, ep.Host)
		}
		user := a.Username
		if user == "" {
			user = ep.User
		}
		if user == "" {
			user = "git"
		}
		creds.method = &githttp.BasicAuth{Username: user, Password: secret}
		return creds, nil
	case "ssh":
		if httpSecret {
			return creds, fmt.Errorf("%w: password or token given for an ssh URL (use an SSH key)", ErrAuth)
		}
		user := a.Username
		if user == "" {
			user = ep.User
		}
		if user == "" {
			user = "git"
		}
		var method gitssh.AuthMethod
		var helper *gitssh.HostKeyCallbackHelper
		if a.SSHKeyFile != "" {
			pem, err := os.ReadFile(a.SSHKeyFile)
			if err != nil {
				return creds, fmt.Errorf("%w: read SSH key: %v", ErrAuth, err)
			}
			var passphrase string
			if a.SSHKeyPassphraseFile != "" {
				passphrase, err = readSecret(a.SSHKeyPassphraseFile, "", "", "")
				if err != nil {
					return creds, err
				}
				creds.secrets = append(creds.secrets, passphrase)
			}
			keys, err := gitssh.NewPublicKeys(user, pem, passphrase)
			if err != nil {
				return creds, fmt.Errorf("%w: SSH key %s: %v", ErrAuth, a.SSHKeyFile, scrub(err.Error(), creds.secrets))
			}
			method, helper = keys, &keys.HostKeyCallbackHelper
		} else {
			agent, err := gitssh.NewSSHAgentAuth(user)
			if err != nil {
				return creds, fmt.Errorf("%w: no SSH key file and no SSH agent: %v", ErrAuth, err)
			}
			method, helper = agent, &agent.HostKeyCallbackHelper
		}
		hostKeys, err := hostKeyCheck(a.KnownHostsFile, ep)
		if err != nil {
			return creds, err
		}
		helper.HostKeyCallback, helper.HostKeyAlgorithms = hostKeys.callback, hostKeys.algorithms
		timeout := 30 * time.Second
		if d, ok := ctx.Deadline(); ok {
			timeout = max(time.Until(d), time.Millisecond)
		}
		creds.method = &sshAuth{AuthMethod: method, timeout: timeout}
		return creds, nil
	case "file":
		if httpSecret || sshSecret {
			return creds, fmt.Errorf("%w: credentials given for a local repository", ErrAuth)
		}
		return creds, nil
	}
	return creds, fmt.Errorf("unsupported URL scheme %q", ep.Protocol)
}

// sshAuth wraps go-git's SSH auth methods to bound the dial and handshake
// by the caller's deadline: go-git dials SSH without the fetch's context.
type sshAuth struct {
	gitssh.AuthMethod
	timeout time.Duration
}

type hostKeys struct {
	callback   ssh.HostKeyCallback
	algorithms []string
}

func (a *sshAuth) ClientConfig() (*ssh.ClientConfig, error) {
	cfg, err := a.AuthMethod.ClientConfig()
	if err != nil {
		return nil, err
	}
	cfg.Timeout = a.timeout
	return cfg, nil
}

func hostKeyCheck(file string, ep *transport.Endpoint) (hostKeys, error) {
	var files []string
	if file != "" {
		if _, err := os.Stat(file); err != nil {
			return hostKeys{}, fmt.Errorf("%w: known hosts: %v", ErrAuth, err)
		}
		files = []string{file}
	}
	db, err := gitssh.NewKnownHostsDb(files...)
	if err != nil {
		return hostKeys{}, fmt.Errorf("%w: known hosts: %v", ErrAuth, err)
	}
	port := ep.Port
	if port <= 0 {
		port = gitssh.DefaultPort
	}
	addr := net.JoinHostPort(ep.Host, strconv.Itoa(port))
	return hostKeys{callback: db.HostKeyCallback(), algorithms: db.HostKeyAlgorithms(addr)}, nil
}

// readSecret reads the one secret named by a file or an environment
// variable. Errors name the file or variable, never the content.
func readSecret(passwordFile, passwordEnv, tokenFile, tokenEnv string) (string, error) {
	var (
		secret string
		source string
	)
	switch {
	case passwordFile != "" || tokenFile != "":
		file := passwordFile + tokenFile
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%w: read secret: %v", ErrAuth, err)
		}
		secret, source = string(b), "file "+file
	case passwordEnv != "" || tokenEnv != "":
		env := passwordEnv + tokenEnv
		secret, source = os.Getenv(env), "environment variable "+env
	}
	// Editors and `echo` leave a trailing newline that is not part of the
	// secret.
	secret = strings.TrimRight(secret, "\r\n")
	if secret == "" {
		return "", fmt.Errorf("%w: %s is empty or unset", ErrAuth, source)
	}
	return secret, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// displayURL is the remote URL as it may appear in logs and errors: no
// userinfo for URLs (the user name of scp-like "git@host:path" stays, it
// cannot carry a password).
func displayURL(raw string) string {
	if ep, err := transport.NewEndpoint(raw); err == nil && ep.Protocol == "ssh" && !strings.Contains(raw, "://") {
		if user, rest, ok := strings.Cut(raw, "@"); ok && strings.Contains(user, ":") {
			user, _, _ = strings.Cut(user, ":")
			return user + "@" + rest
		}
		return raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return scrubUserinfo(raw)
	}
	u.User = nil
	return u.String()
}

var userinfoRE = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@`)

func scrubUserinfo(s string) string { return userinfoRE.ReplaceAllString(s, "$1") }

// scrub removes URL userinfo and every known secret from an error text.
func scrub(s string, secrets []string) string {
	s = scrubUserinfo(s)
	for _, secret := range secrets {
		if secret == "" {
			continue
		}
		s = strings.ReplaceAll(s, secret, "[redacted]")
		// url.Parse errors quote the escaped form.
		if esc := url.QueryEscape(secret); esc != secret {
			s = strings.ReplaceAll(s, esc, "[redacted]")
		}
		if esc := url.PathEscape(secret); esc != secret {
			s = strings.ReplaceAll(s, esc, "[redacted]")
		}
	}
	return s
}

// remoteError is an error from the transport with its text scrubbed. It
// deliberately does not unwrap to the transport's error, whose text may hold
// a secret; it unwraps to this package's classification and to ctx errors.
type remoteError struct {
	msg   string
	kinds []error
}

func (e *remoteError) Error() string   { return e.msg }
func (e *remoteError) Unwrap() []error { return e.kinds }

// sanitize turns an error from go-git into one safe to return and log.
func sanitize(ctx context.Context, op, url string, err error, secrets []string) error {
	if err == nil {
		return nil
	}
	var re *remoteError
	if errors.As(err, &re) {
		return err
	}
	msg := fmt.Sprintf("%s %s: %s", op, displayURL(url), scrub(err.Error(), secrets))
	var kinds []error
	for _, k := range []error{context.DeadlineExceeded, context.Canceled, ErrRefNotFound, ErrCommitNotFound, ErrAuth, ErrUnreachable, ErrInvalidRef} {
		if errors.Is(err, k) {
			kinds = append(kinds, k)
		}
	}
	// A connection closed because ctx ended fails with a network error
	// that does not say why.
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(err, ctxErr) {
		kinds = append(kinds, ctxErr)
		msg += " (" + ctxErr.Error() + ")"
	}
	switch {
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed),
		errors.Is(err, transport.ErrInvalidAuthMethod), strings.Contains(err.Error(), "ssh: unable to authenticate"):
		kinds = append(kinds, ErrAuth)
	case errors.Is(err, transport.ErrRepositoryNotFound):
		kinds = append(kinds, ErrRefNotFound)
	case isNetError(err):
		kinds = append(kinds, ErrUnreachable)
	}
	return &remoteError{msg: msg, kinds: kinds}
}

func isNetError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	if errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	s := err.Error()
	// The SSH handshake flattens host key and dial failures into strings.
	return strings.Contains(s, "knownhosts:") || strings.Contains(s, "ssh: handshake failed") ||
		strings.Contains(s, "connection refused") || strings.Contains(s, "i/o timeout") || strings.Contains(s, "no such host")
}

// go-git dials SSH without the fetch's context and sets no deadline on the
// connection, so a server that accepts and then stays silent would hang a
// fetch forever. Its one hook into the SSH dial is a proxy URL: SSH fetches
// name a private scheme whose dialer looks up the fetch's context by id and
// closes the connection when that context ends.
const ctxDialScheme = "ctxos-ctxdial"

var (
	ctxDialOnce sync.Once
	ctxDials    sync.Map // id string → context.Context
	ctxDialSeq  atomic.Uint64
)

// bindDialContext returns proxy options that tie SSH connections to ctx,
// and a release function to call when the fetch is over.
func bindDialContext(ctx context.Context) (transport.ProxyOptions, func()) {
	ctxDialOnce.Do(func() {
		proxy.RegisterDialerType(ctxDialScheme, func(u *url.URL, _ proxy.Dialer) (proxy.Dialer, error) {
			return ctxDialer{id: u.Host}, nil
		})
	})
	id := "fetch" + strconv.FormatUint(ctxDialSeq.Add(1), 10)
	ctxDials.Store(id, ctx)
	return transport.ProxyOptions{URL: ctxDialScheme + "://" + id}, func() { ctxDials.Delete(id) }
}

type ctxDialer struct{ id string }

func (d ctxDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

func (d ctxDialer) DialContext(dialCtx context.Context, network, addr string) (net.Conn, error) {
	ctx := context.Background()
	if v, ok := ctxDials.Load(d.id); ok {
		ctx = v.(context.Context)
	}
	dialCtx, cancel := context.WithCancel(dialCtx)
	defer cancel()
	stopDial := context.AfterFunc(ctx, cancel)
	defer stopDial()
	var nd net.Dialer
	conn, err := nd.DialContext(dialCtx, network, addr)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, ctx.Err())
		}
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	return &ctxConn{Conn: conn, stop: stop}, nil
}

type ctxConn struct {
	net.Conn
	stop func() bool
}

func (c *ctxConn) Close() error {
	c.stop()
	return c.Conn.Close()
}
