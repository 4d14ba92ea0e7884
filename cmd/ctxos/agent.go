package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ctxos/ctxos/cluster"
	"github.com/ctxos/ctxos/cluster/props"
	"github.com/ctxos/ctxos/cluster/vfs"
	"github.com/ctxos/ctxos/drivers"
	ctrd "github.com/ctxos/ctxos/drivers/containerd"
	"github.com/ctxos/ctxos/drivers/process"
	"github.com/ctxos/ctxos/gitsync"
	"github.com/ctxos/ctxos/reconcile"
)

func init() { register(newAgentCmd) }

// agentConfig is everything `ctxos agent` and `ctxos up` configure.
type agentConfig struct {
	name          string
	dataDir       string
	bind          string
	advertise     string
	api           string
	join          []string
	labels        map[string]string
	roles         []string
	gossipKeyFile string
	profile       string
	statusEvery   time.Duration
	// scalePeriod and scaleDownWindow tune the scaler (reconcile.Config);
	// zero takes its defaults.
	scalePeriod, scaleDownWindow time.Duration
	logLevel                     string
	// logOutput receives the agent's log (stderr when nil).
	logOutput io.Writer
	// containerdSocket is where the containerd driver dials; the driver is
	// left out when nothing listens there.
	containerdSocket string
	git              gitConfig
}

// gitConfig is the desired-state source of a syncing agent.
type gitConfig struct {
	repo              string
	ref               gitsync.Ref
	path              string
	interval          time.Duration
	depth             int
	webhookSecretFile string
	verify            string
	auth              gitsync.Auth
	// dev makes repo a plain directory watched for changes (ctxos up).
	dev bool
}

func newAgentCmd() *cobra.Command {
	var c agentConfig
	var labels []string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the ctxos agent on this node: membership, VFS replica, props, status and the API",
		Long: `Run the ctxos agent on this node.

The agent joins the cluster by gossip (--join, retried until one address
answers), keeps a replica of the VFS under --data-dir, publishes this node's
hardware facts to /hw/<name> and its load to /sum/<name>, and serves the node
API on --api. SIGTERM or SIGINT make it leave the cluster gracefully; SIGHUP
reloads --gossip-key-file (see "Gossip encryption" in the README for key
rotation).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if c.labels, err = parseLabels(labels); err != nil {
				return &exitError{code: 2, err: err}
			}
			for flag, d := range map[string]time.Duration{"--scale-period": c.scalePeriod, "--scale-down-window": c.scaleDownWindow} {
				if d <= 0 {
					return &exitError{code: 2, err: fmt.Errorf("%s %s: want a positive duration", flag, d)}
				}
			}
			return runAgent(cmd.Context(), c, nil)
		},
	}
	host, _ := os.Hostname()
	f := cmd.Flags()
	f.StringVar(&c.name, "name", strings.ToLower(host), "node name, unique in the cluster ([a-z0-9][a-z0-9._-]*)")
	f.StringVar(&c.dataDir, "data-dir", "/var/lib/ctxos", "directory for the VFS replica and the agent's state")
	f.StringVar(&c.bind, "bind", "0.0.0.0:7946", "gossip address (UDP and TCP)")
	f.StringVar(&c.advertise, "advertise", "", "gossip address other nodes use to reach this one (default: the bind address)")
	f.StringVar(&c.api, "api", defaultAPI, "address of the node HTTP API")
	f.StringSliceVar(&c.join, "join", nil, "gossip addresses of members to join through (comma separated)")
	f.StringSliceVar(&labels, "labels", nil, "node labels, key=value (comma separated)")
	f.StringSliceVar(&c.roles, "roles", nil, "node roles (comma separated)")
	f.StringVar(&c.gossipKeyFile, "gossip-key-file", "", "file of base64 gossip keys, primary first; enables encryption")
	f.StringVar(&c.profile, "profile", "lan", "gossip timing profile: lan, wan or local")
	f.DurationVar(&c.statusEvery, "status-interval", 5*time.Second, "how often /sum/<name> is refreshed")
	f.DurationVar(&c.scalePeriod, "scale-period", reconcile.DefaultScalePeriod, "how often autoscaled CTXs are measured and decided")
	f.DurationVar(&c.scaleDownWindow, "scale-down-window", reconcile.DefaultScaleDownWindow, "how long fewer instances must be recommended before the scaler stops some")
	f.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&c.containerdSocket, "containerd-socket", "", "containerd socket for container CTXs (default /run/containerd/containerd.sock; off when absent)")
	addGitFlags(f, &c.git)
	return cmd
}

func addGitFlags(f *pflag.FlagSet, g *gitConfig) {
	f.StringVar(&g.repo, "repo", "", "Git repository (path, file://, https:// or ssh://) to follow; this node then syncs desired state")
	f.StringVar(&g.ref.Branch, "branch", "", "branch to follow (default: the remote's HEAD branch)")
	f.StringVar(&g.ref.Tag, "tag", "", "tag to follow")
	f.StringVar(&g.ref.Semver, "semver", "", "follow the highest tag matching this semver range, e.g. \">=1.2, <2\"")
	f.StringVar(&g.ref.Commit, "commit", "", "pin this commit")
	f.StringVar(&g.path, "path", "", "subdirectory of the repository holding the desired state")
	f.DurationVar(&g.interval, "interval", 30*time.Second, "poll interval (jittered); 0 polls never")
	f.IntVar(&g.depth, "depth", 1, "shallow fetch depth; -1 fetches full history")
	f.StringVar(&g.webhookSecretFile, "webhook-secret-file", "", "file holding the HMAC secret of POST /v1/hooks/git (the webhook is off without it)")
	f.StringVar(&g.verify, "verify", "", "refuse commits not signed by a trusted key: openpgp:KEYRING or ssh:ALLOWED_SIGNERS")
	f.StringVar(&g.auth.Username, "git-username", "", "HTTPS or SSH user name")
	f.StringVar(&g.auth.PasswordFile, "git-password-file", "", "file holding the HTTPS password")
	f.StringVar(&g.auth.TokenFile, "git-token-file", "", "file holding an HTTPS access token")
	f.StringVar(&g.auth.TokenEnv, "git-token-env", "", "environment variable holding an HTTPS access token")
	f.StringVar(&g.auth.SSHKeyFile, "ssh-key-file", "", "SSH private key for ssh:// remotes")
	f.StringVar(&g.auth.KnownHostsFile, "known-hosts-file", "", "known_hosts file with the SSH server's host key")
}

func parseLabels(kvs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q: want key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

func newLogger(level string, out io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	if out == nil {
		out = os.Stderr
	}
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: l})), nil
}

// notifyInterrupt delivers SIGINT and SIGTERM to ch.
func notifyInterrupt(ch chan<- os.Signal) { signal.Notify(ch, os.Interrupt, syscall.SIGTERM) }

// openDrivers opens the drivers this node can run: process always,
// containerd when its socket exists.
func (a *agent) openDrivers() error {
	pd, err := process.New(process.Config{StateDir: filepath.Join(a.cfg.dataDir, "process"), Logger: a.log})
	if err != nil {
		return fmt.Errorf("process driver: %w", err)
	}
	a.drivers = map[string]drivers.Driver{process.Type: pd}
	sock := a.cfg.containerdSocket
	if sock == "" {
		sock = ctrd.DefaultSocket
	}
	if _, err := os.Stat(sock); err != nil {
		a.log.Info("containerd driver off: no socket", "socket", sock)
		return nil
	}
	cd, err := ctrd.New(ctrd.Config{Socket: sock, StateDir: filepath.Join(a.cfg.dataDir, "containerd"), Logger: a.log})
	if err != nil {
		a.log.Warn("containerd driver off", "socket", sock, "err", err)
		return nil
	}
	a.drivers[ctrd.Type] = cd
	return nil
}

// startReconciler opens the step journal and the drivers and runs the
// DSM until stop.
func (a *agent) startReconciler() error {
	j, err := reconcile.OpenJournal(filepath.Join(a.cfg.dataDir, "journal"), reconcile.WithJournalLogger(a.log))
	if err != nil {
		return fmt.Errorf("step journal: %w", err)
	}
	a.journal = j
	if err := a.openDrivers(); err != nil {
		return err
	}
	r, err := reconcile.New(reconcile.Config{
		Node:        a.cfg.name,
		Store:       a.node.Store(),
		Members:     a.node.Members,
		Drivers:     a.drivers,
		Journal:     j,
		Logger:      a.log,
		AfterRecord: crashHook(),

		ScalePeriod:     a.cfg.scalePeriod,
		ScaleDownWindow: a.cfg.scaleDownWindow,
	})
	if err != nil {
		return err
	}
	a.reconciler = r
	a.api.Handle("GET /v1/history", serveHistory(a.cfg.name, j))
	a.api.Handle("GET /v1/logs/{id}", serveLogs(a.cfg.name, a.drivers, logPoll))
	ctx, cancel := context.WithCancel(context.Background())
	a.stopReconciler = func() {
		cancel()
		<-a.reconcilerDone
	}
	a.reconcilerDone = make(chan struct{})
	go func() {
		defer close(a.reconcilerDone)
		if err := r.Run(ctx); err != nil {
			a.log.Error("reconciler stopped", "err", err)
		}
	}()
	return nil
}

// crashHook returns, when CTXOS_CRASH_AFTER_STEPS=N is set, a hook that
// kills the agent with SIGKILL after the Nth journal record: the crash
// tests use it to stop the agent at a chosen step boundary.
func crashHook() func(reconcile.Step) {
	n, err := strconv.Atoi(os.Getenv("CTXOS_CRASH_AFTER_STEPS"))
	if err != nil || n <= 0 {
		return nil
	}
	var count atomic.Int64
	return func(reconcile.Step) {
		if count.Add(1) == int64(n) {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}

// stopWorkloads stops every instance the drivers run (ctxos up without
// --keep) and reports how many it stopped.
func (a *agent) stopWorkloads(ctx context.Context) (int, error) {
	if a.stopReconciler != nil {
		a.stopReconciler()
		a.stopReconciler = nil
	}
	n := 0
	var errs []error
	for _, d := range a.drivers {
		reports, err := drivers.Converge(ctx, d, nil)
		n += len(reports)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// agent is one running node: the cluster member, its API server and the
// loops that publish into the VFS.
type agent struct {
	cfg    agentConfig
	log    *slog.Logger
	node   *cluster.Node
	api    *cluster.API
	srv    *http.Server
	apiURL string
	syncer *gitsync.Syncer

	drivers        map[string]drivers.Driver
	journal        *reconcile.Journal
	reconciler     *reconcile.Reconciler
	stopReconciler func()
	reconcilerDone chan struct{}
	// cancelRequests ends long-lived API requests (watches) at stop, which
	// http.Server.Shutdown alone would wait for.
	cancelRequests context.CancelFunc
}

// runAgent runs the agent until ctx ends, then leaves the cluster. ready,
// when not nil, is called once the API serves.
func runAgent(ctx context.Context, c agentConfig, ready func(*agent)) error {
	a, err := startAgent(ctx, c)
	if err != nil {
		return err
	}
	if ready != nil {
		ready(a)
	}
	<-ctx.Done()
	return a.stop()
}

func startAgent(ctx context.Context, c agentConfig) (*agent, error) {
	logger, err := newLogger(c.logLevel, c.logOutput)
	if err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	ccfg, err := cluster.ConfigForProfile(c.profile)
	if err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	ccfg.Name = c.name
	ccfg.BindAddr = c.bind
	ccfg.Advertise = c.advertise
	ccfg.Labels = c.labels
	ccfg.Roles = c.roles
	ccfg.Logger = logger
	if c.gossipKeyFile != "" {
		if ccfg.GossipKeys, err = cluster.ReadKeyFile(c.gossipKeyFile); err != nil {
			return nil, &exitError{code: 2, err: err}
		}
	}
	ln, err := net.Listen("tcp", c.api)
	if err != nil {
		return nil, fmt.Errorf("API listener: %w", err)
	}
	ccfg.APIAddr = advertisedAPI(ln.Addr().String(), c.advertise)
	node, err := cluster.Start(ctx, ccfg, vfs.Options{Dir: filepath.Join(c.dataDir, "vfs"), Logger: logger})
	if err != nil {
		ln.Close()
		return nil, err
	}
	a := &agent{cfg: c, log: logger, node: node, apiURL: "http://" + ln.Addr().String()}
	a.api = cluster.NewAPI(node)
	a.api.Handle("GET /{$}", serveDashboard(a.api, node.Store(), logger))
	reqCtx, cancelRequests := context.WithCancel(context.Background())
	a.cancelRequests = cancelRequests
	a.srv = &http.Server{
		Handler:           a.api,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
	}
	go func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("API server stopped", "err", err)
		}
	}()
	go func() {
		if err := node.Join(ctx, c.join); err != nil && ctx.Err() == nil {
			logger.Error("join", "err", err)
		}
	}()
	if c.gossipKeyFile != "" {
		go a.reloadKeysOnHUP(ctx)
	}
	if err := a.publishFacts(ctx); err != nil {
		a.stop()
		return nil, &exitError{code: 2, err: err}
	}
	if err := a.startSync(ctx); err != nil {
		a.stop()
		return nil, err
	}
	if err := a.startReconciler(); err != nil {
		a.stop()
		return nil, err
	}
	logger.Info("agent running", "name", c.name, "gossip", node.GossipAddr(), "api", a.apiURL)
	return a, nil
}

// advertisedAPI is the API address other nodes should use: the listener's
// port on the advertised host when the listener is on all interfaces.
func advertisedAPI(listen, advertise string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() && advertise != "" {
		if ah, _, err := net.SplitHostPort(advertise); err == nil {
			return net.JoinHostPort(ah, port)
		}
	}
	return listen
}

func (a *agent) reloadKeysOnHUP(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			keys, err := cluster.ReadKeyFile(a.cfg.gossipKeyFile)
			if err == nil {
				err = a.node.ReloadKeys(keys)
			}
			if err != nil {
				a.log.Error("reload gossip keys: keeping the current keyring", "err", err)
			}
		}
	}
}

// publishFacts keeps /hw/<name> (on change) and /sum/<name> (every
// status interval) up to date until ctx ends.
func (a *agent) publishFacts(ctx context.Context) error {
	reg, err := props.DefaultRegistry(props.Options{Labels: a.cfg.labels, GPUs: props.NewNVML(a.log), Logger: a.log})
	if err != nil {
		return err
	}
	store, name := a.node.Store(), a.cfg.name
	go reg.WatchProps(ctx, props.DefaultPropsInterval, func(hw props.HW) {
		if _, err := store.PutValue("/hw/"+name, hw); err != nil {
			a.log.Error("publish props", "err", err)
		}
	})
	go reg.WatchStatus(ctx, a.cfg.statusEvery, func(s props.Status) {
		if _, err := store.PutValue("/sum/"+name, s); err != nil {
			a.log.Error("publish status", "err", err)
		}
	})
	return nil
}

// startSync makes this node a syncer of desired state when --repo is set:
// it follows the repository, serves the webhook and `ctxos sync`.
func (a *agent) startSync(ctx context.Context) error {
	g := a.cfg.git
	a.api.Handle("POST /v1/sync", http.HandlerFunc(a.handleSync))
	if g.repo == "" {
		return nil
	}
	if err := g.ref.Validate(); err != nil {
		return &exitError{code: 2, err: err}
	}
	var tree gitsync.Tree
	if g.dev {
		dt := &gitsync.DirTree{Dir: g.repo}
		if err := dt.Watch(ctx, func(r string) { a.syncer.Fire(r) }, a.log); err != nil {
			return err
		}
		tree = dt
	} else {
		src := &gitsync.Source{
			URL: g.repo, Ref: g.ref, Path: g.path, Auth: g.auth, Depth: g.depth,
			CacheDir: filepath.Join(a.cfg.dataDir, "git", "cache"), Logger: a.log,
		}
		if g.verify != "" {
			v, err := gitsync.ParseVerify(g.verify)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--verify: %w", err)}
			}
			src.Verify = v
		}
		tree = &gitsync.GitTree{Source: src, WorkDir: filepath.Join(a.cfg.dataDir, "git", "work")}
	}
	a.syncer = &gitsync.Syncer{Tree: tree, Store: a.node.Store(), Node: a.cfg.name, Interval: g.interval, Logger: a.log}
	if g.webhookSecretFile != "" {
		secret, err := os.ReadFile(g.webhookSecretFile)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("--webhook-secret-file: %w", err)}
		}
		hook, err := gitsync.NewWebhook([]byte(strings.TrimSpace(string(secret))), a.syncer.Fire, a.log)
		if err != nil {
			return &exitError{code: 2, err: fmt.Errorf("--webhook-secret-file %s: %w", g.webhookSecretFile, err)}
		}
		a.api.Handle("POST /v1/hooks/git", hook)
	}
	go a.syncer.Run(ctx)
	return nil
}

// handleSync serves `ctxos sync`: sync now and answer with the outcome.
func (a *agent) handleSync(w http.ResponseWriter, r *http.Request) {
	if a.syncer == nil {
		writeHTTPJSON(w, http.StatusConflict, map[string]string{"error": "this node does not follow a repository (no --repo); run ctxos sync against a node that does"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Minute)
	defer cancel()
	st, err := a.syncer.SyncNow(ctx, "ctxos sync")
	if err != nil {
		writeHTTPJSON(w, http.StatusBadGateway, map[string]any{"error": err.Error(), "status": st})
		return
	}
	writeHTTPJSON(w, http.StatusOK, st)
}

func writeHTTPJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// stop leaves the cluster gracefully and shuts everything down.
func (a *agent) stop() error {
	if err := a.node.Leave(5 * time.Second); err != nil {
		a.log.Warn("leave", "err", err)
	}
	if a.stopReconciler != nil {
		a.stopReconciler()
	}
	a.cancelRequests()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.srv.Shutdown(ctx)
	err := a.node.Close()
	// Drivers close after the reconciler: closing stops supervision, not
	// the workloads, which outlive the agent and are adopted at restart.
	for _, d := range a.drivers {
		d.Close()
	}
	if a.journal != nil {
		a.journal.Close()
	}
	return err
}
