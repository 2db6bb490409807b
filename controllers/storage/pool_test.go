package storage

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/holdfast-dev/holdfast/internal/repository"
)

// fakeRepository counts Close calls and whether one came while an operation ran.
type fakeRepository struct {
	repository.Repository
	closed      atomic.Int32
	inOperation atomic.Bool
	closedInOp  atomic.Bool
}

func (f *fakeRepository) Close(context.Context) error {
	f.closed.Add(1)
	if f.inOperation.Load() {
		f.closedInOp.Store(true)
	}
	return nil
}

// TestPoolNeverClosesARepositoryInUse: maintenance forgets its repository and a new
// key or credentials reopen it, while a snapshot deletion or a listing of restore
// points still uses the old one (review M12). The pool closes it once the last user
// is done, and only then.
func TestPoolNeverClosesARepositoryInUse(t *testing.T) {
	ctx := context.Background()
	var opened []*fakeRepository
	p := NewPool(t.TempDir(), "")
	p.open = func(context.Context, repository.Config) (repository.Repository, error) {
		f := &fakeRepository{}
		opened = append(opened, f)
		return f, nil
	}
	cfg := repository.Config{Store: repository.Store{Filesystem: &repository.FilesystemStore{Path: "/store"}}, Namespace: "shop", Password: "one"}

	deleting, err := p.Open(ctx, "shop/r", cfg)
	if err != nil {
		t.Fatal(err)
	}
	first := opened[0]
	first.inOperation.Store(true) // a Delete is running
	maintaining, _ := p.Open(ctx, "shop/r", cfg)
	p.Forget(ctx, "shop/r") // maintenance finished
	_ = maintaining.Close(ctx)
	cfg.Password = "two" // the key Secret was replaced
	rotated, _ := p.Open(ctx, "shop/r", cfg)
	if len(opened) != 2 {
		t.Fatalf("opened %d repositories, want 2", len(opened))
	}
	if first.closed.Load() != 0 {
		t.Fatal("the repository was closed while a Delete was using it")
	}
	first.inOperation.Store(false)
	_ = deleting.Close(ctx)
	_ = deleting.Close(ctx) // a second Close returns nothing twice
	if got := first.closed.Load(); got != 1 {
		t.Errorf("the forgotten repository was closed %d times after its last user, want 1", got)
	}
	if first.closedInOp.Load() {
		t.Error("closed during an operation")
	}
	_ = rotated.Close(ctx)
	if opened[1].closed.Load() != 0 {
		t.Error("the current repository was closed when its user returned it; the pool keeps it open")
	}
	p.Forget(ctx, "shop/r")
	if opened[1].closed.Load() != 1 {
		t.Error("forgetting an unused repository did not close it")
	}
}
