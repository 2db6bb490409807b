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
type Pool struct {
	workDir, resticPath string

	mu    sync.Mutex
	repos map[string]pooled
}

type pooled struct {
	fingerprint string
	repo        repository.Repository
}

// NewPool returns a pool whose repositories keep their private files under workDir.
func NewPool(workDir, resticPath string) *Pool {
	return &Pool{workDir: workDir, resticPath: resticPath, repos: map[string]pooled{}}
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

// Open returns the open repository for key (namespace/name of the BackupRepository),
// opening it, or reopening it when cfg changed.
func (p *Pool) Open(ctx context.Context, key string, cfg repository.Config) (repository.Repository, error) {
	cfg = p.Config(cfg)
	fp := fingerprint(cfg)
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.repos[key]; ok {
		if e.fingerprint == fp {
			return e.repo, nil
		}
		_ = e.repo.Close(ctx)
		delete(p.repos, key)
	}
	r, err := repository.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	p.repos[key] = pooled{fingerprint: fp, repo: r}
	return r, nil
}

// Forget closes and drops the repository for key, for example after an error that
// may have left it unusable.
func (p *Pool) Forget(ctx context.Context, key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if e, ok := p.repos[key]; ok {
		_ = e.repo.Close(ctx)
		delete(p.repos, key)
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
