package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"

	"github.com/holdfast-dev/holdfast/internal/repository"
)

// Pool keeps repositories open between reconciles: opening costs a key derivation
// (about a quarter second) and a kopia repository must not be reopened per status
// update. A repository is reopened when its store, key or uploader changes.
//
// Several reconcilers use one repository at once (maintenance, snapshot deletion,
// restore points), so Open lends it: the caller must Close what it got, which returns
// the loan. A repository that is replaced (its settings changed) or forgotten is
// closed when its last loan comes back, never under a caller (review M12).
type Pool struct {
	workDir, resticPath string
	// open opens a repository; repository.Open unless a test says otherwise.
	open func(context.Context, repository.Config) (repository.Repository, error)

	mu    sync.Mutex
	repos map[string]*pooled
}

type pooled struct {
	fingerprint string
	repo        repository.Repository
	loans       int
	// retired: no longer handed out; closed when loans reaches zero.
	retired bool
}

// NewPool returns a pool whose repositories keep their private files under workDir.
func NewPool(workDir, resticPath string) *Pool {
	return &Pool{workDir: workDir, resticPath: resticPath, open: repository.Open, repos: map[string]*pooled{}}
}

// Config completes cfg with the pool's work directory and restic binary.
func (p *Pool) Config(cfg repository.Config) repository.Config {
	cfg.WorkDir, cfg.ResticPath = p.workDir, p.resticPath
	return cfg
}

func fingerprint(cfg repository.Config) string {
	h := sha256.New()
	for _, s := range []string{cfg.URL(), string(cfg.Uploader), cfg.Password} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	if s := cfg.Store.S3; s != nil {
		for _, v := range []string{s.Endpoint, s.AccessKeyID, s.SecretAccessKey, s.SessionToken, string(s.CABundle)} {
			h.Write([]byte(v))
			h.Write([]byte{0})
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Open lends the open repository for key (namespace/name of the BackupRepository),
// opening it, or opening it again when cfg changed. Close the result when done: it
// returns the loan and closes nothing that others use.
func (p *Pool) Open(ctx context.Context, key string, cfg repository.Config) (repository.Repository, error) {
	cfg = p.Config(cfg)
	fp := fingerprint(cfg)
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.repos[key]; ok {
		if e.fingerprint == fp {
			return p.lend(e), nil
		}
		p.retire(ctx, key, e)
	}
	r, err := p.open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	e := &pooled{fingerprint: fp, repo: r}
	p.repos[key] = e
	return p.lend(e), nil
}

// lend hands out e; p.mu is held.
func (p *Pool) lend(e *pooled) repository.Repository {
	e.loans++
	return &loan{Repository: e.repo, give: func(ctx context.Context) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		e.loans--
		if e.retired && e.loans == 0 {
			return e.repo.Close(ctx)
		}
		return nil
	}}
}

// retire stops handing out e, closing it now if nobody has it; p.mu is held.
func (p *Pool) retire(ctx context.Context, key string, e *pooled) {
	delete(p.repos, key)
	e.retired = true
	if e.loans == 0 {
		_ = e.repo.Close(ctx)
	}
}

// Forget drops the repository for key, for example after maintenance or an error that
// may have left it unusable: the next Open opens it again. It is closed once nobody
// uses it.
func (p *Pool) Forget(ctx context.Context, key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.repos[key]; ok {
		p.retire(ctx, key, e)
	}
}

// Start waits for the manager to stop and closes every repository, so that no kopia
// config file (it holds the store's secret key) stays behind.
func (p *Pool) Start(ctx context.Context) error {
	<-ctx.Done()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, e := range p.repos {
		_ = e.repo.Close(context.Background())
		delete(p.repos, k)
	}
	return nil
}

// loan is a lent repository: Close gives it back, once.
type loan struct {
	repository.Repository
	once sync.Once
	give func(context.Context) error
}

func (l *loan) Close(ctx context.Context) error {
	var err error
	l.once.Do(func() { err = l.give(ctx) })
	return err
}
