package storage

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/internal/conditions"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// RestorePoint is one snapshot the store holds, and where.
type RestorePoint struct {
	repository.Snapshot
	Namespace       string
	StorageLocation string
	Uploader        v1.Uploader
	// Repository is the BackupRepository (in Namespace) holding the snapshot.
	Repository string
}

// NamespaceUID is the namespace incarnation the snapshot was taken in; "" for
// snapshots written before Holdfast recorded it.
func (p RestorePoint) NamespaceUID() string { return p.Tags[identity.TagNamespaceUID] }

// catalogTTL is how long a repository's snapshot list is reused before the store is
// read again; a backup that completes makes it stale at once (Invalidate).
const catalogTTL = time.Minute

// Catalog reads restore points from the store itself, so that a restore works when the
// PodVolumeBackup objects are gone: the namespace was deleted, or this is a new cluster.
type Catalog struct {
	Client    client.Client
	Secrets   client.Reader
	Namespace string
	Pool      *Pool

	mu    sync.Mutex
	lists map[client.ObjectKey]catalogEntry
}

type catalogEntry struct {
	snapshots []repository.Snapshot
	at        time.Time
}

// Invalidate makes the next read of a repository's snapshots go to the store.
func (c *Catalog) Invalidate(key client.ObjectKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.lists, key)
}

// Snapshots lists the snapshots of a Ready repository.
func (c *Catalog) Snapshots(ctx context.Context, brepo *v1.BackupRepository) ([]repository.Snapshot, error) {
	key := client.ObjectKeyFromObject(brepo)
	c.mu.Lock()
	e, ok := c.lists[key]
	c.mu.Unlock()
	if ok && time.Since(e.at) < catalogTTL {
		return e.snapshots, nil
	}
	rep, err := openExisting(ctx, c.Client, c.Secrets, c.Namespace, c.Pool, brepo)
	if err != nil {
		return nil, err
	}
	defer rep.Close(ctx) //nolint:errcheck // returns the pool's loan
	snaps, err := rep.Snapshots(ctx, "")
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lists == nil {
		c.lists = map[client.ObjectKey]catalogEntry{}
	}
	c.lists[key] = catalogEntry{snapshots: snaps, at: time.Now()}
	return snaps, nil
}

// RestorePoints lists what the store holds for namespace ns on a storage location (on
// every Ready one when location is empty), with both uploaders. A repository the store
// holds that has no BackupRepository in the cluster gets one, which the repository
// controller connects; that one, and any that is not Ready yet, is named in waiting
// with the reason: its restore points are not known yet.
func (c *Catalog) RestorePoints(ctx context.Context, ns, location string) (points []RestorePoint, waiting []string, err error) {
	var locations []v1.BackupStorageLocation
	if location != "" {
		bsl := &v1.BackupStorageLocation{}
		if err := c.Client.Get(ctx, client.ObjectKey{Name: location}, bsl); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, []string{fmt.Sprintf("storage location %s does not exist", location)}, nil
			}
			return nil, nil, err
		}
		locations = []v1.BackupStorageLocation{*bsl}
	} else {
		var list v1.BackupStorageLocationList
		if err := c.Client.List(ctx, &list); err != nil {
			return nil, nil, err
		}
		locations = list.Items
	}
	for i := range locations {
		bsl := &locations[i]
		if !conditions.IsReady(bsl.Status.Conditions) {
			if location != "" {
				waiting = append(waiting, fmt.Sprintf("storage location %s is not Ready: %s", bsl.Name, conditions.ReadyMessage(bsl.Status.Conditions)))
			}
			continue
		}
		for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
			found, why, err := c.repositoryPoints(ctx, ns, bsl, uploader)
			if err != nil {
				return nil, nil, err
			}
			points = append(points, found...)
			if why != "" {
				waiting = append(waiting, why)
			}
		}
	}
	sort.SliceStable(points, func(i, j int) bool { return points[i].StartTime.Before(points[j].StartTime) })
	return points, waiting, nil
}

// repositoryPoints lists one repository's restore points, or says why it cannot yet.
func (c *Catalog) repositoryPoints(ctx context.Context, ns string, bsl *v1.BackupStorageLocation, uploader v1.Uploader) ([]RestorePoint, string, error) {
	name := identity.RepositoryName(bsl.Name, uploader)
	brepo := &v1.BackupRepository{}
	err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, brepo)
	switch {
	case apierrors.IsNotFound(err):
		return nil, c.connect(ctx, ns, name, bsl, uploader), nil
	case err != nil:
		return nil, "", err
	case !conditions.IsReady(brepo.Status.Conditions):
		msg := conditions.ReadyMessage(brepo.Status.Conditions)
		if msg == "" {
			msg = "not connected yet"
		}
		return nil, fmt.Sprintf("BackupRepository %s/%s: %s", ns, name, msg), nil
	}
	snaps, err := c.Snapshots(ctx, brepo)
	if err != nil {
		return nil, fmt.Sprintf("BackupRepository %s/%s: reading its snapshots: %v", ns, name, err), nil
	}
	out := make([]RestorePoint, 0, len(snaps))
	for _, s := range snaps {
		out = append(out, RestorePoint{Snapshot: s, Namespace: ns, StorageLocation: bsl.Name, Uploader: uploader, Repository: name})
	}
	return out, "", nil
}

// connect creates the BackupRepository of a repository that the store holds for the
// namespace and the cluster does not know (as the policy controller would), and says
// so; it says nothing when the store holds none.
func (c *Catalog) connect(ctx context.Context, ns, name string, bsl *v1.BackupStorageLocation, uploader v1.Uploader) string {
	store, _, err := storeFor(ctx, c.Secrets, c.Namespace, bsl)
	if err != nil {
		return fmt.Sprintf("storage location %s: %v", bsl.Name, err)
	}
	ok, err := repository.Exists(ctx, repository.Config{Store: store, Uploader: uploader, Namespace: ns})
	switch {
	case err != nil:
		return fmt.Sprintf("looking for a %s repository of namespace %s on storage location %s: %v", uploader, ns, bsl.Name, err)
	case !ok:
		return ""
	}
	brepo := &v1.BackupRepository{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
			v1.LabelStorageLocation: identity.LabelValue(bsl.Name), v1.LabelManagedBy: v1.ManagedByValue}},
		Spec: v1.BackupRepositorySpec{StorageLocation: bsl.Name, Uploader: uploader},
	}
	if err := c.Client.Create(ctx, brepo); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Sprintf("creating BackupRepository %s/%s for the backups found in the store: %v", ns, name, err)
	}
	return fmt.Sprintf("BackupRepository %s/%s: connecting to the %s repository found in the store of storage location %s", ns, name, uploader, bsl.Name)
}

// Open lends the open repository of a Ready BackupRepository, for reading inside its
// snapshots (browse sessions). Close it when done: that returns the loan.
func (c *Catalog) Open(ctx context.Context, brepo *v1.BackupRepository) (repository.Repository, error) {
	return openExisting(ctx, c.Client, c.Secrets, c.Namespace, c.Pool, brepo)
}
