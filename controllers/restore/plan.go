package restore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/holdfast-dev/holdfast/agent/restorewait"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/controllers/storage"
	"github.com/holdfast-dev/holdfast/internal/identity"
	"github.com/holdfast-dev/holdfast/internal/repository"
)

// volumePlan is one volume of one pod and the restore point it is restored from.
type volumePlan struct {
	Volume     string
	SourcePath string
	Point      *restorePoint
}

// restorePoint is a snapshot a volume can be restored from: one that a PodVolumeBackup
// of the source namespace records, or one the store holds whose PodVolumeBackup is gone
// (the namespace was deleted, or this is a new cluster).
type restorePoint struct {
	SnapshotID, SourcePath                 string
	Namespace, StorageLocation, Repository string
	Uploader                               v1.Uploader
	Time                                   time.Time
	// Backup is the PodVolumeBackup, when the cluster still has it.
	Backup *v1.PodVolumeBackup
	// BackupName is the PodVolumeBackup that made the snapshot, also when it is gone.
	BackupName string
	// Dropped, set only when "latest" or "before" fell back to a backup flagged
	// FilesDropped because no unflagged backup of the source was left, says so.
	Dropped string
}

// sources are what a restore can read: the PodVolumeBackups of its source namespace
// and the restore points the store holds for it.
type sources struct {
	backups []v1.PodVolumeBackup
	store   []storage.RestorePoint
	// namespace is the source namespace: which incarnations of it it adopts. Nil when
	// unknown, and then only its PodVolumeBackups are read.
	namespace *corev1.Namespace
	// waiting names the repositories whose restore points are not known yet, and why.
	waiting []string
}

// sourcesFromStatus is sources for the pod webhook, which must answer at once: the
// source namespace's PodVolumeBackups, and the restore points that its repositories'
// status lists (the newest and the oldest of each source, which is enough to know
// whether a volume has one at or before a time), all from the cache. The restore
// controller reads the store itself and picks the snapshot.
func sourcesFromStatus(ctx context.Context, c client.Reader, vr *v1.VolumeRestore) (sources, error) {
	ns := sourceNamespace(vr)
	var backups v1.PodVolumeBackupList
	if err := c.List(ctx, &backups, client.InNamespace(ns)); err != nil {
		return sources{}, fmt.Errorf("listing the PodVolumeBackups of namespace %s: %w", ns, err)
	}
	out := sources{backups: backups.Items}
	namespace := &corev1.Namespace{}
	if err := c.Get(ctx, types.NamespacedName{Name: ns}, namespace); err != nil {
		return out, client.IgnoreNotFound(err)
	}
	out.namespace = namespace
	var repos v1.BackupRepositoryList
	if err := c.List(ctx, &repos, client.InNamespace(ns)); err != nil {
		return sources{}, fmt.Errorf("listing the BackupRepositories of namespace %s: %w", ns, err)
	}
	for _, repo := range repos.Items {
		for _, rp := range repo.Status.RestorePoints {
			tags := map[string]string{identity.TagNamespaceUID: rp.NamespaceUID}
			point := func(id string, at time.Time) storage.RestorePoint {
				return storage.RestorePoint{Snapshot: repository.Snapshot{ID: id, SourcePath: rp.SourcePath, StartTime: at, Tags: tags},
					Namespace: ns, StorageLocation: repo.Spec.StorageLocation, Uploader: repo.Spec.Uploader, Repository: repo.Name}
			}
			out.store = append(out.store, point(rp.LatestSnapshotID, rp.Latest.Time))
			if rp.Snapshots > 1 {
				out.store = append(out.store, point("", rp.Oldest.Time))
			}
		}
	}
	return out, nil
}

// points lists the restore points of path: every completed PodVolumeBackup, and each
// snapshot the store holds that no PodVolumeBackup records, when the source namespace
// adopts the namespace incarnation it was taken in. foreign counts those it does not
// adopt, by their namespace UID.
func (s sources) points(path string) (points []restorePoint, foreign map[string]int) {
	recorded := map[string]bool{}
	for i := range s.backups {
		b := &s.backups[i]
		if b.Spec.SourcePath != path || b.Status.Phase != v1.RunCompleted || b.Status.SnapshotID == "" {
			continue
		}
		recorded[b.Status.SnapshotID] = true
		points = append(points, restorePoint{SnapshotID: b.Status.SnapshotID, SourcePath: path, Namespace: b.Namespace,
			StorageLocation: b.Spec.StorageLocation, Repository: b.Spec.Repository, Uploader: b.Spec.Uploader,
			Time: storage.BackupTime(b), Backup: b, BackupName: b.Name})
	}
	for _, p := range s.store {
		if p.SourcePath != path || recorded[p.ID] || s.namespace == nil {
			continue
		}
		if uid := p.NamespaceUID(); !identity.Adopts(s.namespace, uid) {
			if foreign == nil {
				foreign = map[string]int{}
			}
			foreign[uid]++
			continue
		}
		points = append(points, restorePoint{SnapshotID: p.ID, SourcePath: path, Namespace: p.Namespace,
			StorageLocation: p.StorageLocation, Repository: p.Repository, Uploader: p.Uploader,
			Time: p.StartTime, BackupName: p.Tags[identity.TagBackup]})
	}
	return points, foreign
}

// unadopted counts, by namespace UID, the snapshots the store holds that no
// PodVolumeBackup records and that the source namespace does not adopt: what a pod
// created now would not wait for.
func (s sources) unadopted() map[string]int {
	if s.namespace == nil {
		return nil
	}
	recorded := map[string]bool{}
	for i := range s.backups {
		recorded[s.backups[i].Status.SnapshotID] = true
	}
	var foreign map[string]int
	for _, p := range s.store {
		if recorded[p.ID] || identity.Adopts(s.namespace, p.NamespaceUID()) {
			continue
		}
		if foreign == nil {
			foreign = map[string]int{}
		}
		foreign[p.NamespaceUID()]++
	}
	return foreign
}

// podPlan is what a restore does to one pod.
type podPlan struct {
	Volumes []volumePlan
	// Missing are the volumes the restore names but cannot restore; they make the
	// restore fail for those volumes.
	Missing []missingVolume
	// NoBackup lists volumes of the pod that could be restored but have no backup,
	// with why; with no volumes named in the restore they are left as they are.
	NoBackup []missingVolume
}

// missingVolume is a volume that cannot be restored, with the sentence that says why.
type missingVolume struct {
	Volume  string
	Message string
}

// planner decides, for a restore and a pod, which volume gets which backup. The
// reconciler and the pod webhook share it, so the init container waits for exactly
// the volumes that get a PodVolumeRestore.
type planner struct {
	client client.Reader
	// live, when set, reads what client (a cache) does not hold yet.
	live client.Reader
	// slots is the replica slot (see package identity) whose backups each pod's
	// pod-local volumes get, by pod UID, and noSlot says why a replica gets none (its
	// owner has more pods than slots with backups); assignSlots fills both. A replica in
	// neither is planned from the newest backup of any of its owner's slots: the pod
	// webhook only needs to know that some slot has a backup, and the restore
	// controller then gives each pod a slot of its own.
	slots  map[types.UID]int
	noSlot map[types.UID]string
}

// sourceNamespace is the namespace whose backups a restore reads.
func sourceNamespace(vr *v1.VolumeRestore) string {
	if vr.Spec.SourceNamespace != "" {
		return vr.Spec.SourceNamespace
	}
	return vr.Namespace
}

// plan resolves the volumes of pod for vr from src (read once by the caller for all
// pods).
func (p *planner) plan(ctx context.Context, vr *v1.VolumeRestore, pod *corev1.Pod, src sources) (podPlan, error) {
	var out podPlan
	named := map[string]*v1.RestoreSource{}
	for i := range vr.Spec.Volumes {
		named[vr.Spec.Volumes[i].Name] = vr.Spec.Volumes[i].Source
	}
	for i := range pod.Spec.Volumes {
		vol := &pod.Spec.Volumes[i]
		if restorewait.IsMarkerVolume(pod, vol.Name) {
			continue // restore-wait's, made empty for this pod
		}
		rs, isNamed := named[vol.Name]
		if len(vr.Spec.Volumes) > 0 && !isNamed {
			continue // named is emptied as it goes: spec.volumes says which to restore
		}
		delete(named, vol.Name)
		if !restorable(vol) {
			if isNamed {
				out.Missing = append(out.Missing, missingVolume{vol.Name,
					fmt.Sprintf("volume %s of pod %s is a %s volume, which Holdfast does not restore", vol.Name, pod.Name, kindOf(vol))})
			}
			continue
		}
		if rs == nil {
			rs = vr.Spec.Source
		}
		if rs == nil {
			// The API server defaults it; an object from elsewhere may lack it.
			rs = &v1.RestoreSource{Latest: true}
		}
		path, point, why := p.choose(ctx, vr, rs, identityPod(pod), vol, src)
		switch {
		case point != nil:
			out.Volumes = append(out.Volumes, volumePlan{Volume: vol.Name, SourcePath: path, Point: point})
		case isNamed || len(vr.Spec.Volumes) > 0:
			out.Missing = append(out.Missing, missingVolume{vol.Name, fmt.Sprintf("volume %s of pod %s: %s", vol.Name, pod.Name, why)})
		default:
			out.NoBackup = append(out.NoBackup, missingVolume{vol.Name, fmt.Sprintf("volume %s of pod %s: %s", vol.Name, pod.Name, why)})
		}
	}
	for name := range named {
		out.Missing = append(out.Missing, missingVolume{name, fmt.Sprintf("pod %s has no volume %s", pod.Name, name)})
	}
	slices.SortFunc(out.Missing, func(a, b missingVolume) int { return strings.Compare(a.Volume, b.Volume) })
	return out, nil
}

// choose picks the restore point of volume vol of pod, and returns the source path
// it is restored from: that of its replica slot when it is a pod-local volume of a
// replica (see planner.slots), else its source path.
func (p *planner) choose(ctx context.Context, vr *v1.VolumeRestore, rs *v1.RestoreSource, pod *corev1.Pod, vol *corev1.Volume, src sources) (string, *restorePoint, string) {
	if from := vr.FromOf(vol.Name); from != "" {
		// spec.volumes[].from: the backups of that source, whatever this volume is.
		point, why := choose(vr, rs, from, src)
		return from, point, why
	}
	rsOwner := p.replicaSetOwner(ctx)
	path := identity.SourcePath(pod, vol, rsOwner)
	if !identity.Replicated(pod, vol, rsOwner) {
		point, why := choose(vr, rs, path, src)
		return path, point, why
	}
	owner, _ := identity.ReplicaOwner(pod, rsOwner)
	named := rs.PodVolumeBackup != "" // the user chose the backup: any slot's
	if slot, ok := p.slots[pod.UID]; ok && !named {
		path = identity.SlotPath(owner, vol.Name, slot)
		point, why := choose(vr, rs, path, src)
		return path, point, why
	}
	if why, ok := p.noSlot[pod.UID]; ok && !named {
		return path, nil, fmt.Sprintf("no backup of a replica slot of its own: %s", why)
	}
	// Any slot: the newest backup among them (or the one spec names).
	var best *restorePoint
	bestWhy := ""
	for _, slotPath := range src.slotPaths(owner, vol.Name) {
		point, why := choose(vr, rs, slotPath, src)
		switch {
		case point != nil && (best == nil || newerPoint(point, best)):
			best = point
		case point == nil && slotPath == path:
			bestWhy = why
		}
	}
	if best != nil {
		return best.SourcePath, best, ""
	}
	if bestWhy == "" {
		_, bestWhy = choose(vr, rs, path, src)
	}
	return path, nil, bestWhy
}

// slotPaths lists, in slot order, the source paths of the replica slots of volume of
// the owner at ownerPath that src has backups or restore points of, slot 0 always.
func (s sources) slotPaths(ownerPath, volume string) []string {
	slots := map[int]string{0: identity.SlotPath(ownerPath, volume, 0)}
	add := func(path string) {
		if !strings.HasSuffix(path, "/"+volume) {
			return
		}
		if slot, ok := identity.SlotOf(ownerPath, path); ok {
			slots[slot] = path
		}
	}
	for i := range s.backups {
		add(s.backups[i].Spec.SourcePath)
	}
	for i := range s.store {
		add(s.store[i].SourcePath)
	}
	keys := make([]int, 0, len(slots))
	for k := range slots {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, slots[k])
	}
	return out
}

// assignSlots gives the replicas among pods (those restored in this pass, and those a
// PodVolumeRestore in existing already restores) distinct replica slots of their
// owner, so that each restored replica gets the data of one backed-up replica and no
// two pods the same: a pod keeps the slot its PodVolumeRestores record, and the
// others take, oldest pod first, the lowest slots that have a backup to restore. A
// replica left without one (more pods than backed-up replicas) is recorded in
// p.noSlot with why. restores says whether a pod is restored in this pass.
func (p *planner) assignSlots(ctx context.Context, vr *v1.VolumeRestore, pods []corev1.Pod, existing []v1.PodVolumeRestore, src sources, restores func(*corev1.Pod) bool) {
	p.slots, p.noSlot = map[types.UID]int{}, map[types.UID]string{}
	rsOwner := p.replicaSetOwner(ctx)
	recorded := map[types.UID][]string{}
	for i := range existing {
		uid := types.UID(existing[i].Spec.Pod.UID)
		recorded[uid] = append(recorded[uid], existing[i].Spec.SourcePath)
	}
	type group struct {
		pods     []*corev1.Pod
		previous map[types.UID]int
		volumes  []*corev1.Volume // the replicated volumes the restore may restore
	}
	groups := map[string]*group{}
	var order []string
	for i := range pods {
		pod := identityPod(&pods[i])
		owner, ok := identity.ReplicaOwner(pod, rsOwner)
		if !ok {
			continue
		}
		g := groups[owner]
		if g == nil {
			g = &group{previous: map[types.UID]int{}}
			groups[owner] = g
			order = append(order, owner)
		}
		slot, had := -1, false
		for _, path := range recorded[pod.UID] {
			if k, ok := identity.SlotOf(owner, path); ok {
				slot, had = k, true
				break
			}
		}
		switch {
		case had:
			g.previous[pod.UID] = slot
		case len(recorded[pod.UID]) > 0 || !restores(pod):
			continue // restored already without a slot, or not restored now
		}
		g.pods = append(g.pods, pod)
		if g.volumes == nil {
			g.volumes = replicatedVolumes(vr, pod, rsOwner)
		}
	}
	for _, owner := range order {
		g := groups[owner]
		has := map[int]bool{}
		for _, vol := range g.volumes {
			rs := sourceOf(vr, vol.Name)
			if rs.PodVolumeBackup != "" {
				continue // restored as named into every replica
			}
			for _, path := range src.slotPaths(owner, vol.Name) {
				if point, _ := choose(vr, rs, path, src); point != nil {
					slot, _ := identity.SlotOf(owner, path)
					has[slot] = true
				}
			}
		}
		assigned := identity.AssignSlots(g.pods, g.previous, func(slot int) bool { return has[slot] })
		for _, pod := range g.pods {
			if slot, ok := assigned[pod.UID]; ok {
				p.slots[pod.UID] = slot
				continue
			}
			p.noSlot[pod.UID] = fmt.Sprintf("the %d backed-up replica(s) of %s are restored into other pods of it, one each",
				len(has), strings.TrimPrefix(owner, "/"))
		}
	}
}

// replicatedVolumes are the pod-local volumes of a replica that vr restores.
func replicatedVolumes(vr *v1.VolumeRestore, pod *corev1.Pod, rsOwner identity.OwnerOfReplicaSet) []*corev1.Volume {
	named := map[string]bool{}
	for i := range vr.Spec.Volumes {
		named[vr.Spec.Volumes[i].Name] = true
	}
	out := []*corev1.Volume{}
	for i := range pod.Spec.Volumes {
		vol := &pod.Spec.Volumes[i]
		if (len(named) == 0 || named[vol.Name]) && restorable(vol) && !restorewait.IsMarkerVolume(pod, vol.Name) && identity.Replicated(pod, vol, rsOwner) {
			out = append(out, vol)
		}
	}
	return out
}

// sourceOf is the restore source of the volume named volume: its entry in
// spec.volumes, else spec.source, else the latest backup.
func sourceOf(vr *v1.VolumeRestore, volume string) *v1.RestoreSource {
	for i := range vr.Spec.Volumes {
		if vr.Spec.Volumes[i].Name == volume && vr.Spec.Volumes[i].Source != nil {
			return vr.Spec.Volumes[i].Source
		}
	}
	if vr.Spec.Source != nil {
		return vr.Spec.Source
	}
	return &v1.RestoreSource{Latest: true}
}

// choose picks the restore point of one volume. It returns nil and a sentence when
// there is none.
func choose(vr *v1.VolumeRestore, rs *v1.RestoreSource, path string, src sources) (*restorePoint, string) {
	ns := sourceNamespace(vr)
	points, foreign := src.points(path)
	if rs.PodVolumeBackup != "" {
		for i := range src.backups {
			if b := &src.backups[i]; b.Name == rs.PodVolumeBackup {
				if b.Status.Phase != v1.RunCompleted || b.Status.SnapshotID == "" {
					return nil, fmt.Sprintf("PodVolumeBackup %s/%s is %s, not Completed", ns, b.Name, phaseOf(b))
				}
			}
		}
		for i := range points {
			if points[i].BackupName == rs.PodVolumeBackup {
				return &points[i], ""
			}
		}
		return nil, fmt.Sprintf("PodVolumeBackup %s/%s does not exist, and the store holds no snapshot of %s it made", ns, rs.PodVolumeBackup, path)
	}
	// A backup flagged FilesDropped (it suddenly holds no or very few files: the volume
	// was likely not mounted, or was wiped) is the last resort.
	var best, bestDropped *restorePoint
	for i := range points {
		pt := &points[i]
		if vr.Spec.StorageLocation != "" && pt.StorageLocation != vr.Spec.StorageLocation {
			continue
		}
		if rs.Before != nil && pt.Time.After(rs.Before.Time) {
			continue
		}
		if pt.Backup != nil {
			if _, dropped := storage.DroppedFiles(pt.Backup); dropped {
				if bestDropped == nil || newerPoint(pt, bestDropped) {
					bestDropped = pt
				}
				continue
			}
		}
		if best == nil || newerPoint(pt, best) {
			best = pt
		}
	}
	if best != nil {
		return best, ""
	}
	if bestDropped != nil {
		msg, _ := storage.DroppedFiles(bestDropped.Backup)
		bestDropped.Dropped = fmt.Sprintf("restoring backup %s although it is flagged FilesDropped, because no other backup of %s is left to restore: %s",
			bestDropped.BackupName, path, msg)
		return bestDropped, ""
	}
	where := "in namespace " + ns
	if vr.Spec.StorageLocation != "" {
		where += " on storage location " + vr.Spec.StorageLocation
	}
	why := fmt.Sprintf("no completed backup of %s %s", path, where)
	if rs.Before != nil {
		why = fmt.Sprintf("no completed backup of %s %s at or before %s", path, where, rs.Before.UTC().Format("2006-01-02T15:04:05Z"))
	}
	if len(foreign) > 0 {
		why += "; " + earlierBackups(ns, "of it ", foreign)
	}
	if len(src.waiting) > 0 {
		why += "; still reading the store: " + strings.Join(src.waiting, "; ")
	}
	return nil, why
}

// earlierBackups says what the store holds of namespace ns from earlier namespaces of
// that name (foreign counts snapshots by namespace UID) and how an administrator lets
// ns restore it. what says of what, e.g. "of it ".
func earlierBackups(ns, what string, foreign map[string]int) string {
	uids := make([]string, 0, len(foreign))
	n := 0
	for uid, c := range foreign {
		if uid == "" {
			uid = "(recorded before namespace UIDs)"
		}
		uids = append(uids, uid)
		n += c
	}
	slices.Sort(uids)
	return fmt.Sprintf("the store holds %d backup(s) %staken in an earlier namespace %s (uid %s), which an administrator lets this namespace restore with the annotation %s: <uid> (or *) on namespace %s",
		n, what, ns, strings.Join(uids, ", "), v1.AnnotationAdoptBackups, ns)
}

// newerPoint orders restore points of one volume; two PodVolumeBackups as newer does.
func newerPoint(a, b *restorePoint) bool {
	if a.Backup != nil && b.Backup != nil {
		return newer(a.Backup, b.Backup)
	}
	if !a.Time.Equal(b.Time) {
		return a.Time.After(b.Time)
	}
	return a.BackupName > b.BackupName
}

// newer reports whether backup a of a volume holds later data than b, by the API
// server's clock (storage.BackupTime, as retention orders them): the agent writes
// status.startTime from its node's clock, and a node whose clock is ahead would make
// its backups look newest. Creation times have whole seconds, so two runs in the same
// second (run-now twice, as make test's stories do) tie; then a backup whose parent is
// the other's snapshot is the newer, and after that the later name (run names carry
// their start time).
func newer(a, b *v1.PodVolumeBackup) bool {
	ta, tb := storage.BackupTime(a), storage.BackupTime(b)
	if !ta.Equal(tb) {
		return ta.After(tb)
	}
	switch {
	case a.Status.ParentSnapshotID != "" && a.Status.ParentSnapshotID == b.Status.SnapshotID:
		return true
	case b.Status.ParentSnapshotID != "" && b.Status.ParentSnapshotID == a.Status.SnapshotID:
		return false
	}
	return a.Name > b.Name
}

func phaseOf(b *v1.PodVolumeBackup) string {
	if b.Status.Phase == "" {
		return string(v1.RunPending)
	}
	return string(b.Status.Phase)
}

// replicaSetOwner answers the owner of a ReplicaSet, so a Deployment pod's source path
// is /deployment/<name>/<volume>, as at backup time. It reads the cache and, when the
// cache does not hold the ReplicaSet (a Deployment's brand-new one, whose first pods
// are being admitted while the cache catches up), the API server.
func (p *planner) replicaSetOwner(ctx context.Context) identity.OwnerOfReplicaSet {
	return func(namespace, name string) *metav1.OwnerReference {
		rs := &appsv1.ReplicaSet{}
		key := types.NamespacedName{Namespace: namespace, Name: name}
		err := p.client.Get(ctx, key, rs)
		if apierrors.IsNotFound(err) && p.live != nil {
			err = p.live.Get(ctx, key, rs)
		}
		if err != nil {
			return nil
		}
		return metav1.GetControllerOf(rs)
	}
}

// identityPod is the pod as its source identity sees it. A DaemonSet pod is admitted
// before it is scheduled, without spec.nodeName, but the DaemonSet controller pins it
// to its node by a required node affinity on the field metadata.name; the node there
// is the one its backups were taken on (/daemonset/<name>/<node>/<volume>).
func identityPod(pod *corev1.Pod) *corev1.Pod {
	if pod.Spec.NodeName != "" {
		return pod
	}
	owner := metav1.GetControllerOf(pod)
	if owner == nil || owner.Kind != "DaemonSet" {
		return pod
	}
	node := nodeFromAffinity(pod)
	if node == "" {
		return pod
	}
	out := pod.DeepCopy()
	out.Spec.NodeName = node
	return out
}

// nodeFromAffinity is the one node a pod's required node affinity allows by name
// (every term matching the field metadata.name to the same single value), "" when it
// allows more or does not say.
func nodeFromAffinity(pod *corev1.Pod) string {
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	terms := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	node := ""
	for _, term := range terms {
		termNode := ""
		for _, f := range term.MatchFields {
			if f.Key == "metadata.name" && f.Operator == corev1.NodeSelectorOpIn && len(f.Values) == 1 {
				termNode = f.Values[0]
			}
		}
		// Terms are ORed: each must name the node, and the same one.
		if termNode == "" || (node != "" && termNode != node) {
			return ""
		}
		node = termNode
	}
	return node
}

// restorable says whether Holdfast can restore a volume of this kind at all.
func restorable(vol *corev1.Volume) bool {
	s := vol.VolumeSource
	return s.HostPath == nil && s.Secret == nil && s.ConfigMap == nil && s.Projected == nil && s.DownwardAPI == nil
}

func kindOf(vol *corev1.Volume) string {
	s := vol.VolumeSource
	switch {
	case s.HostPath != nil:
		return "hostPath"
	case s.Secret != nil:
		return "secret"
	case s.ConfigMap != nil:
		return "configMap"
	case s.Projected != nil:
		return "projected"
	case s.DownwardAPI != nil:
		return "downwardAPI"
	}
	return "other"
}

// granted says whether the source namespace lets ns restore its backups.
func granted(source *corev1.Namespace, ns string) bool {
	for _, n := range strings.Split(source.Annotations[v1.AnnotationRestoreInto], ",") {
		if strings.TrimSpace(n) == ns {
			return true
		}
	}
	return false
}
