package gitsync

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

// largeObject is the blob size above which go-git streams an object from
// its packfile instead of inflating it into memory, so a large file in the
// repository costs disk, not heap.
const largeObject = 1 << 20

// Source is one Git remote followed into a local cache. The zero value is
// not usable: URL and CacheDir are required. A Source is safe for concurrent
// use; operations on the cache are serialized. A CacheDir belongs to one
// Source: two Sources, or two processes, must not share it.
type Source struct {
	// URL is a local path, file://, http(s)://, ssh:// or scp-like
	// user@host:path. Userinfo in it is used but never shown.
	URL string
	// Ref is what to follow; the zero Ref follows the remote's HEAD branch.
	Ref Ref
	// Path is the subdirectory of the repository that holds the desired
	// state; empty or "." is the root.
	Path string
	// Auth names the credentials.
	Auth Auth
	// CacheDir holds the bare cache repository. It survives restarts and
	// failed fetches: the last good commit stays readable while the remote
	// is down or the ref is gone.
	CacheDir string
	// Depth is the shallow fetch depth. 0 means the default, 1; a negative
	// Depth fetches the full history. A pinned Commit always fetches full
	// history, since servers seldom allow fetching a bare commit hash.
	Depth int
	// Verify, when set, makes Fetch refuse a commit whose signature it does
	// not accept.
	Verify *Verifier
	// Logger receives one line per fetch that changes the commit; nil
	// discards.
	Logger *slog.Logger

	mu sync.Mutex
}

// Revision describes the commit a Fetch resolved.
type Revision struct {
	// Commit is the full hash.
	Commit string
	// Ref is the full reference followed ("refs/heads/main",
	// "refs/tags/v1.2.0"), or the hash for a pinned commit.
	Ref string
	// Author, Email and Subject come from the commit's author and the
	// first line of its message.
	Author, Email, Subject string
	// Time is the committer time: when the commit landed, not when it was
	// first written.
	Time time.Time
	// Signed reports whether the commit carries a signature at all.
	Signed bool
	// Signer is who signed it, set only when Source.Verify accepted the
	// signature.
	Signer string
}

func (s *Source) logger() *slog.Logger {
	if s.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Logger
}

func (s *Source) depth() int {
	switch {
	case s.Ref.Commit != "" || s.Depth < 0:
		return 0
	case s.Depth == 0:
		return 1
	}
	return s.Depth
}

func (s *Source) check() error {
	if s.URL == "" {
		return errors.New("gitsync: source URL is empty")
	}
	if s.CacheDir == "" {
		return fmt.Errorf("gitsync: source %s: cache dir is empty", displayURL(s.URL))
	}
	if _, err := cleanSubdir(s.Path); err != nil {
		return err
	}
	return s.Ref.Validate()
}

// Fetch brings the followed ref from the remote into the cache and returns
// the commit it points to. The cache is created on first use and reused
// after. A branch that moved backwards or to unrelated history (force push,
// reset) is followed like any other move; use IsAncestor to notice it.
//
// Errors: ErrInvalidRef for a bad Ref; ErrRefNotFound when the branch or tag
// is gone (the cache keeps the last commit); ErrAuth, ErrUnreachable or a
// ctx error when the remote cannot be used; ErrCommitNotFound for a pinned
// commit the remote does not have; ErrUnsigned, ErrUntrusted or
// ErrBadSignature when Verify refuses the commit, in which case the returned
// Revision still describes the refused commit.
func (s *Source) Fetch(ctx context.Context) (Revision, error) {
	if err := s.check(); err != nil {
		return Revision{}, err
	}
	ep, err := transport.NewEndpoint(s.URL)
	if err != nil {
		return Revision{}, sanitize(ctx, "parse", s.URL, err, nil)
	}
	creds, err := s.Auth.resolve(ctx, ep)
	if err != nil {
		return Revision{}, sanitize(ctx, "credentials for", s.URL, err, creds.secrets)
	}
	if ep.Protocol == "ssh" {
		var release func()
		creds.proxy, release = bindDialContext(ctx)
		defer release()
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	repo, err := s.openCache(true)
	if err != nil {
		return Revision{}, err
	}
	pinnedCached := s.Ref.Commit != "" && hasObject(repo, plumbing.NewHash(s.Ref.Commit))
	if s.depth() == 0 && isShallow(repo) && !pinnedCached {
		// go-git cannot unshallow in place, so a cache that was shallow
		// is rebuilt next to the old one and swapped in on success.
		if repo, err = s.rebuildFull(ctx, creds); err != nil {
			return Revision{}, err
		}
	}

	var (
		name plumbing.ReferenceName
		hash plumbing.Hash
	)
	if s.Ref.Commit != "" {
		hash, err = s.fetchPinned(ctx, repo, creds)
		if err != nil {
			return Revision{}, err
		}
		if err := repo.Storer.SetReference(plumbing.NewHashReference(plumbing.HEAD, hash)); err != nil {
			return Revision{}, fmt.Errorf("cache %s: %w", s.CacheDir, err)
		}
	} else {
		if name, err = s.fetchRef(ctx, repo, creds); err != nil {
			return Revision{}, err
		}
		// HEAD of the cache follows the ref so `plan --from HEAD~1`
		// means what the user expects.
		if err := repo.Storer.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, name)); err != nil {
			return Revision{}, fmt.Errorf("cache %s: %w", s.CacheDir, err)
		}
		ref, err := repo.Reference(name, true)
		if err != nil {
			return Revision{}, fmt.Errorf("cache %s: %s: %w", s.CacheDir, name, err)
		}
		hash = ref.Hash()
	}

	commit, err := peelCommit(repo, hash)
	if err != nil {
		return Revision{}, fmt.Errorf("fetch %s: %s: %w", displayURL(s.URL), s.Ref, err)
	}
	rev := revisionOf(commit, name)
	if s.Verify != nil {
		signer, err := s.Verify.Verify(commit)
		if err != nil {
			return rev, fmt.Errorf("fetch %s: %s at %s: %w", displayURL(s.URL), s.Ref, rev.Commit, err)
		}
		rev.Signer = signer
	}
	return rev, nil
}

// fetchRef lists the remote, picks the followed reference and fetches it
// unless the cache already holds what it points to: a poll of an unchanged
// remote costs one ref listing.
func (s *Source) fetchRef(ctx context.Context, repo *git.Repository, creds credentials) (plumbing.ReferenceName, error) {
	remote := git.NewRemote(repo.Storer, &config.RemoteConfig{Name: "origin", URLs: []string{s.URL}})
	refs, err := remote.ListContext(ctx, &git.ListOptions{Auth: creds.method, ProxyOptions: creds.proxy})
	if err != nil {
		return "", sanitize(ctx, "list", s.URL, err, creds.secrets)
	}
	name, advertised, err := s.Ref.target(refs)
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", displayURL(s.URL), err)
	}
	if local, err := repo.Reference(name, false); err == nil && local.Hash() == advertised && hasObject(repo, advertised) {
		return name, nil
	}
	started := time.Now()
	err = remote.FetchContext(ctx, &git.FetchOptions{
		RefSpecs: []config.RefSpec{config.RefSpec("+" + name.String() + ":" + name.String())},
		Depth:    s.depth(),
		Auth:     creds.method,
		Tags:     git.NoTags,
		Force:    true,

		ProxyOptions: creds.proxy,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return "", sanitize(ctx, "fetch", s.URL, err, creds.secrets)
	}
	s.logger().Info("fetched", "url", displayURL(s.URL), "ref", name.String(), "commit", advertised.String(),
		"depth", s.depth(), "took", time.Since(started).Round(time.Millisecond))
	return name, nil
}

// fetchPinned makes sure the pinned commit is in the cache. A cached pinned
// commit is served without contacting the remote: it cannot change.
func (s *Source) fetchPinned(ctx context.Context, repo *git.Repository, creds credentials) (plumbing.Hash, error) {
	hash := plumbing.NewHash(s.Ref.Commit)
	if _, err := repo.CommitObject(hash); err == nil {
		return hash, nil
	}
	remote := git.NewRemote(repo.Storer, &config.RemoteConfig{Name: "origin", URLs: []string{s.URL}})
	err := remote.FetchContext(ctx, &git.FetchOptions{
		RefSpecs: []config.RefSpec{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"},
		Auth:     creds.method,
		Tags:     git.NoTags,
		Force:    true,

		ProxyOptions: creds.proxy,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return hash, sanitize(ctx, "fetch", s.URL, err, creds.secrets)
	}
	if _, err := repo.CommitObject(hash); err != nil {
		return hash, fmt.Errorf("fetch %s: %w: %s is on no branch or tag of the remote", displayURL(s.URL), ErrCommitNotFound, hash)
	}
	s.logger().Info("fetched", "url", displayURL(s.URL), "commit", hash.String())
	return hash, nil
}

// rebuildFull fetches full history into a fresh cache next to the old one
// and swaps it in only on success, so a failed fetch leaves the old cache.
func (s *Source) rebuildFull(ctx context.Context, creds credentials) (*git.Repository, error) {
	tmp := filepath.Clean(s.CacheDir) + ".full"
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("cache %s: %w", tmp, err)
	}
	repo, err := initCache(tmp)
	if err != nil {
		return nil, err
	}
	remote := git.NewRemote(repo.Storer, &config.RemoteConfig{Name: "origin", URLs: []string{s.URL}})
	err = remote.FetchContext(ctx, &git.FetchOptions{
		RefSpecs: []config.RefSpec{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"},
		Auth:     creds.method,
		Tags:     git.NoTags,
		Force:    true,

		ProxyOptions: creds.proxy,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		os.RemoveAll(tmp)
		return nil, sanitize(ctx, "fetch", s.URL, err, creds.secrets)
	}
	if err := os.RemoveAll(s.CacheDir); err != nil {
		return nil, fmt.Errorf("cache %s: %w", s.CacheDir, err)
	}
	if err := os.Rename(tmp, s.CacheDir); err != nil {
		return nil, fmt.Errorf("cache %s: %w", s.CacheDir, err)
	}
	s.logger().Info("rebuilt cache with full history", "url", displayURL(s.URL), "cache", s.CacheDir)
	return s.openCache(false)
}

// openCache opens the bare cache repository, creating it when create is set.
func (s *Source) openCache(create bool) (*git.Repository, error) {
	if _, err := os.Stat(filepath.Join(s.CacheDir, "HEAD")); err != nil {
		if !create {
			return nil, fmt.Errorf("cache %s: %w", s.CacheDir, ErrNoCache)
		}
		return initCache(s.CacheDir)
	}
	repo, err := git.Open(cacheStorage(s.CacheDir), nil)
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", s.CacheDir, err)
	}
	return repo, nil
}

func initCache(dir string) (*git.Repository, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cache %s: %w", dir, err)
	}
	repo, err := git.Init(cacheStorage(dir), nil)
	if err != nil {
		return nil, fmt.Errorf("init cache %s: %w", dir, err)
	}
	return repo, nil
}

func cacheStorage(dir string) *filesystem.Storage {
	return filesystem.NewStorageWithOptions(osfs.New(dir), cache.NewObjectLRUDefault(),
		filesystem.Options{LargeObjectThreshold: largeObject})
}

func isShallow(repo *git.Repository) bool {
	shallow, err := repo.Storer.Shallow()
	return err == nil && len(shallow) > 0
}

func hasObject(repo *git.Repository, h plumbing.Hash) bool {
	_, err := repo.Storer.EncodedObject(plumbing.AnyObject, h)
	return err == nil
}

// peelCommit follows annotated tags (possibly nested) down to a commit.
func peelCommit(repo *git.Repository, h plumbing.Hash) (*object.Commit, error) {
	for range 10 {
		obj, err := repo.Object(plumbing.AnyObject, h)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCommitNotFound, h, err)
		}
		switch o := obj.(type) {
		case *object.Commit:
			return o, nil
		case *object.Tag:
			h = o.Target
		default:
			return nil, fmt.Errorf("%w: %s is a %s, not a commit", ErrCommitNotFound, h, obj.Type())
		}
	}
	return nil, fmt.Errorf("%w: %s: tags nested too deep", ErrCommitNotFound, h)
}

func revisionOf(c *object.Commit, name plumbing.ReferenceName) Revision {
	subject, _, _ := strings.Cut(strings.TrimLeft(c.Message, "\n"), "\n")
	ref := name.String()
	if name == "" {
		ref = c.Hash.String()
	}
	return Revision{
		Commit:  c.Hash.String(),
		Ref:     ref,
		Author:  c.Author.Name,
		Email:   c.Author.Email,
		Subject: strings.TrimSpace(subject),
		Time:    c.Committer.When,
		Signed:  c.PGPSignature != "",
	}
}

// Checkout writes the tree of commit under Source.Path into dst as plain
// files, keeping the executable bit and symlinks that stay inside the
// subtree. dst must not exist or be empty. Only the cache is read, so the
// last good commit stays readable while the remote is down.
//
// Errors: ErrNoCache before the first Fetch; ErrCommitNotFound; ErrPathNotFound
// when Path is not a directory at commit; ErrUnsafePath for a symlink leaving
// the subtree or a dangerous entry name; ErrSubmodule for a submodule.
func (s *Source) Checkout(ctx context.Context, commit, dst string) error {
	sub, err := cleanSubdir(s.Path)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	repo, err := s.openCache(false)
	if err != nil {
		return err
	}
	h, err := repo.ResolveRevision(plumbing.Revision(commit))
	if err != nil {
		return fmt.Errorf("checkout: %w: %s", ErrCommitNotFound, commit)
	}
	c, err := peelCommit(repo, *h)
	if err != nil {
		return fmt.Errorf("checkout %s: %w", commit, err)
	}
	tree, err := c.Tree()
	if err != nil {
		return fmt.Errorf("checkout %s: tree: %w", c.Hash, err)
	}
	if sub != "" {
		tree, err = tree.Tree(sub)
		if err != nil {
			return fmt.Errorf("checkout: %w: %q is not a directory at commit %s", ErrPathNotFound, sub, c.Hash)
		}
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	entries, err := os.ReadDir(dst)
	if err != nil {
		return fmt.Errorf("checkout: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("checkout: destination %s is not empty", dst)
	}
	w := treeWriter{ctx: ctx, root: dst, commit: c.Hash.String()}
	return w.write(tree, "")
}

type treeWriter struct {
	ctx    context.Context
	root   string
	commit string
}

// write writes tree into root/rel. rel is slash-separated.
func (w treeWriter) write(tree *object.Tree, rel string) error {
	for _, e := range tree.Entries {
		if err := w.ctx.Err(); err != nil {
			return fmt.Errorf("checkout %s: %w", w.commit, err)
		}
		p := path.Join(rel, e.Name)
		if e.Name == "" || e.Name == "." || e.Name == ".." || strings.ContainsAny(e.Name, "/\\\x00") || strings.EqualFold(e.Name, ".git") {
			return fmt.Errorf("checkout %s: %w: entry %q in %q", w.commit, ErrUnsafePath, e.Name, rel)
		}
		full := filepath.Join(w.root, filepath.FromSlash(p))
		switch e.Mode {
		case filemode.Dir:
			sub, err := tree.Tree(e.Name)
			if err != nil {
				return fmt.Errorf("checkout %s: %s: %w", w.commit, p, err)
			}
			if err := os.Mkdir(full, 0o755); err != nil {
				return fmt.Errorf("checkout %s: %w", w.commit, err)
			}
			if err := w.write(sub, p); err != nil {
				return err
			}
		case filemode.Regular, filemode.Deprecated, filemode.Executable:
			perm := os.FileMode(0o644)
			if e.Mode == filemode.Executable {
				perm = 0o755
			}
			if err := w.file(tree, e, full, perm); err != nil {
				return fmt.Errorf("checkout %s: %s: %w", w.commit, p, err)
			}
		case filemode.Symlink:
			if err := w.symlink(tree, e, p, full); err != nil {
				return err
			}
		case filemode.Submodule:
			return fmt.Errorf("checkout %s: %w: %s", w.commit, ErrSubmodule, p)
		default:
			return fmt.Errorf("checkout %s: %s: unknown file mode %o", w.commit, p, uint32(e.Mode))
		}
	}
	return nil
}

func (w treeWriter) file(tree *object.Tree, e object.TreeEntry, full string, perm os.FileMode) error {
	file, err := tree.TreeEntryFile(&e)
	if err != nil {
		return err
	}
	r, err := file.Reader()
	if err != nil {
		return err
	}
	defer r.Close()
	f, err := os.OpenFile(full, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// The umask may have cut the executable bit the commit records.
	return os.Chmod(full, perm)
}

func (w treeWriter) symlink(tree *object.Tree, e object.TreeEntry, rel, full string) error {
	file, err := tree.TreeEntryFile(&e)
	if err != nil {
		return fmt.Errorf("checkout %s: %s: %w", w.commit, rel, err)
	}
	r, err := file.Reader()
	if err != nil {
		return fmt.Errorf("checkout %s: %s: %w", w.commit, rel, err)
	}
	b, err := io.ReadAll(io.LimitReader(r, 4096))
	r.Close()
	if err != nil {
		return fmt.Errorf("checkout %s: %s: %w", w.commit, rel, err)
	}
	target := string(b)
	// The link is resolved as the loader would: relative to its directory,
	// and must land inside the checked out subtree.
	resolved := path.Join(path.Dir(rel), target)
	if target == "" || path.IsAbs(target) || strings.Contains(target, "\x00") || resolved == ".." || strings.HasPrefix(resolved, "../") {
		return fmt.Errorf("checkout %s: %w: symlink %s points outside the tree to %q", w.commit, ErrUnsafePath, rel, target)
	}
	if err := os.Symlink(target, full); err != nil {
		return fmt.Errorf("checkout %s: %s: %w", w.commit, rel, err)
	}
	return nil
}

// cleanSubdir normalizes Source.Path to a slash-separated relative path,
// "" for the root.
func cleanSubdir(p string) (string, error) {
	if p == "" {
		return "", nil
	}
	c := path.Clean(strings.ReplaceAll(p, "\\", "/"))
	if path.IsAbs(c) || c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("gitsync: path %q must be a directory inside the repository", p)
	}
	if c == "." {
		return "", nil
	}
	return c, nil
}

// Resolve turns a revision ("main", "v1.2.0", a hash or an abbreviation,
// "HEAD~1", "main^") into a full commit hash. For a local repository URL the
// repository itself is asked first, so uncommitted-to-cache branches work;
// otherwise, or when it does not know the revision, the cache is. In a
// shallow cache, ancestors beyond the fetch depth are unknown.
func (s *Source) Resolve(ctx context.Context, rev string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if rev == "" {
		return "", fmt.Errorf("resolve: %w: empty revision", ErrInvalidRef)
	}
	var firstErr error
	if dir, ok := localPath(s.URL); ok {
		repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true})
		if err == nil {
			h, err := resolveIn(repo, rev)
			if err == nil {
				return h, nil
			}
			firstErr = err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	repo, err := s.openCache(false)
	if err != nil {
		if firstErr != nil {
			return "", fmt.Errorf("resolve %q in %s: %w", rev, displayURL(s.URL), firstErr)
		}
		return "", fmt.Errorf("resolve %q: %w", rev, err)
	}
	h, err := resolveIn(repo, rev)
	if err != nil {
		return "", fmt.Errorf("resolve %q in %s: %w", rev, displayURL(s.URL), err)
	}
	return h, nil
}

func resolveIn(repo *git.Repository, rev string) (string, error) {
	h, err := repo.ResolveRevision(plumbing.Revision(rev))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrCommitNotFound, err)
	}
	c, err := peelCommit(repo, *h)
	if err != nil {
		return "", err
	}
	return c.Hash.String(), nil
}

// localPath reports whether url names a repository on this machine.
func localPath(url string) (string, bool) {
	ep, err := transport.NewEndpoint(url)
	if err != nil || ep.Protocol != "file" {
		return "", false
	}
	return ep.Path, true
}

// deepenDepth is how far IsAncestor deepens a shallow cache to find out:
// enough for any run of pushes between two polls.
const deepenDepth = 1000

// IsAncestor reports whether old is an ancestor of (or equal to) new in the
// cache: false after a force push or reset moved the ref to unrelated or
// older history. In a shallow cache whose history is cut between new and
// old, it fetches the followed ref once more with depth 1000 and asks
// again; if the answer is still cut off, the error wraps ErrShallowHistory.
func (s *Source) IsAncestor(ctx context.Context, old, new string) (bool, error) {
	ok, err := s.isAncestorCached(ctx, old, new)
	if !errors.Is(err, ErrShallowHistory) || s.Ref.Commit != "" {
		return ok, err
	}
	if derr := s.deepen(ctx); derr != nil {
		return false, fmt.Errorf("%w (deepening the cache failed: %v)", err, derr)
	}
	return s.isAncestorCached(ctx, old, new)
}

// deepen refetches the ref the cache's HEAD follows with deepenDepth.
func (s *Source) deepen(ctx context.Context) error {
	ep, err := transport.NewEndpoint(s.URL)
	if err != nil {
		return sanitize(ctx, "parse", s.URL, err, nil)
	}
	creds, err := s.Auth.resolve(ctx, ep)
	if err != nil {
		return sanitize(ctx, "credentials for", s.URL, err, creds.secrets)
	}
	if ep.Protocol == "ssh" {
		var release func()
		creds.proxy, release = bindDialContext(ctx)
		defer release()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	repo, err := s.openCache(false)
	if err != nil {
		return err
	}
	head, err := repo.Storer.Reference(plumbing.HEAD)
	if err != nil || head.Type() != plumbing.SymbolicReference {
		return fmt.Errorf("cache %s: HEAD does not follow a ref", s.CacheDir)
	}
	name := head.Target()
	remote := git.NewRemote(repo.Storer, &config.RemoteConfig{Name: "origin", URLs: []string{s.URL}})
	err = remote.FetchContext(ctx, &git.FetchOptions{
		RefSpecs: []config.RefSpec{config.RefSpec("+" + name.String() + ":" + name.String())},
		Depth:    deepenDepth,
		Auth:     creds.method,
		Tags:     git.NoTags,
		Force:    true,

		ProxyOptions: creds.proxy,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return sanitize(ctx, "deepen", s.URL, err, creds.secrets)
	}
	return nil
}

func (s *Source) isAncestorCached(ctx context.Context, old, new string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	repo, err := s.openCache(false)
	if err != nil {
		return false, err
	}
	oldHash, err := repo.ResolveRevision(plumbing.Revision(old))
	if err != nil {
		return false, fmt.Errorf("is-ancestor: %w: %s", ErrCommitNotFound, old)
	}
	newHash, err := repo.ResolveRevision(plumbing.Revision(new))
	if err != nil {
		return false, fmt.Errorf("is-ancestor: %w: %s", ErrCommitNotFound, new)
	}
	if *oldHash == *newHash {
		return true, nil
	}
	seen := map[plumbing.Hash]bool{*newHash: true}
	queue := []plumbing.Hash{*newHash}
	var cut plumbing.Hash
	for len(queue) > 0 {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		h := queue[0]
		queue = queue[1:]
		c, err := repo.CommitObject(h)
		if err != nil {
			// A parent missing from the cache is the shallow edge.
			cut = h
			continue
		}
		for _, p := range c.ParentHashes {
			if p == *oldHash {
				return true, nil
			}
			if !seen[p] {
				seen[p] = true
				queue = append(queue, p)
			}
		}
	}
	if !cut.IsZero() {
		return false, fmt.Errorf("is-ancestor %s %s: %w: cut at %s", old, new, ErrShallowHistory, cut)
	}
	return false, nil
}
