package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
	"github.com/holdfast-dev/holdfast/test/testenv"
)

// A volume holding a Unix socket backs up Completed on both uploaders, and the
// PodVolumeBackup says what the snapshot left out: status.skipped.sockets and an
// event naming the count (issue 16 item 5). A socket is no loss of the user's data
// (its owner makes it again), so the event is Normal.
func TestBackupReportsSkippedSocket(t *testing.T) {
	testenv.Require(t, env)
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ns := env.Namespace(t, nil)
			repo := ensureRepository(t, ns, "minio", uploader)
			src := newVolume(t, ns, "app-socket")
			if err := os.WriteFile(filepath.Join(src.dir, "data.txt"), []byte("kept\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Mknod(filepath.Join(src.dir, "app.sock"), syscall.S_IFSOCK|0o600, 0); err != nil {
				t.Fatal(err)
			}

			pvb := createBackup(t, src, "with-socket", "minio", repo, uploader)
			done := waitBackupPhase(t, pvb, v1.RunCompleted, v1.RunFailed)
			if done.Status.Phase != v1.RunCompleted {
				t.Fatalf("backup %s: %s", done.Status.Phase, done.Status.Message)
			}
			want := v1.SkippedEntries{Sockets: 1}
			if got := done.Status.Skipped; got == nil || *got != want {
				t.Fatalf("status.skipped = %+v, want %+v", got, want)
			}
			waitSkippedEvent(t, ns, pvb.Name, "1 socket")
		})
	}
}

// A PodVolumeBackup whose spec.files says excludeCaches leaves out the contents of the
// volume's cache directories on both uploaders, and says so: status.skipped
// counts the directory, and the EntriesSkipped event is Normal, since the policy
// asked for it (issue 16 item 4).
func TestBackupReportsExcludedCacheDirectories(t *testing.T) {
	testenv.Require(t, env)
	for _, uploader := range []v1.Uploader{v1.UploaderKopia, v1.UploaderRestic} {
		t.Run(string(uploader), func(t *testing.T) {
			ns := env.Namespace(t, nil)
			repo := ensureRepository(t, ns, "minio", uploader)
			src := newVolume(t, ns, "app-cache")
			for name, content := range map[string]string{
				"data.txt": "kept\n", "cache/CACHEDIR.TAG": "Signature: 8a477f597d28d172789f06886806bc55\n", "cache/blob": "cached\n",
			} {
				p := filepath.Join(src.dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			pvb := &v1.PodVolumeBackup{
				ObjectMeta: metav1.ObjectMeta{Name: "caches", Namespace: ns, Labels: map[string]string{v1.LabelPolicy: "agent-test"}},
				Spec: v1.PodVolumeBackupSpec{Node: nodeName, Pod: v1.PodReference{Name: src.pod, UID: string(src.uid)}, Volume: src.name,
					SourcePath: "/deployment/app/data", StorageLocation: "minio", Repository: repo, Uploader: uploader,
					Files: &v1.BackupFiles{ExcludeCaches: true}},
			}
			if err := env.Client.Create(ctxFor(t), pvb); err != nil {
				t.Fatal(err)
			}
			done := waitBackupPhase(t, pvb, v1.RunCompleted, v1.RunFailed)
			if done.Status.Phase != v1.RunCompleted {
				t.Fatalf("backup %s: %s", done.Status.Phase, done.Status.Message)
			}
			want := v1.SkippedEntries{CacheDirectories: 1}
			if got := done.Status.Skipped; got == nil || *got != want {
				t.Fatalf("status.skipped = %+v, want %+v", got, want)
			}
			if got := done.Status.Progress.TotalFiles; got != 2 {
				t.Errorf("status.progress.totalFiles = %d, want 2 (data.txt and the tag)", got)
			}
			waitSkippedEvent(t, ns, pvb.Name, "1 cache directory")
		})
	}
}

// waitSkippedEvent waits for the Normal EntriesSkipped event of backup name that names
// what ("1 socket").
func waitSkippedEvent(t *testing.T, ns, name, what string) {
	t.Helper()
	waitFor(t, "an EntriesSkipped event on backup "+name, func() error {
		var list eventsv1.EventList
		if err := env.Client.List(ctxFor(t), &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.Reason != "EntriesSkipped" || e.Regarding.Name != name {
				continue
			}
			if e.Type != corev1.EventTypeNormal || !strings.Contains(e.Note, what) {
				return fmt.Errorf("event %s %q: want Normal naming %s", e.Type, e.Note, what)
			}
			return nil
		}
		return fmt.Errorf("none among %d events", len(list.Items))
	})
}
