package e2e

import (
	"context"
	"fmt"
	"strings"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	backupv1alpha1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// Names of the namespace-deletion story (manifests/wiki*.yaml), which `make demo`
// tells too.
const (
	WikiNamespace = "wiki"
	WikiPolicy    = "wiki"
	WikiRestore   = "wiki-from-latest"
	// WikiVolume is the wiki Deployment's emptyDir.
	WikiVolume = "pages"
	// WikiDir is where the wiki's pod mounts it.
	WikiDir = "/pages"
)

// ReadyForPods is what a VolumeRestore applied before its application says once it
// knows what the store holds for it and pods created from then on wait for their data
// (controllers/restore: reason WaitingForPods).
const ReadyForPods = "pods created now wait for their data"

// DeployWiki applies the wiki's namespace and Deployment and waits for its pod.
func (e *Env) DeployWiki(ctx context.Context) error {
	e.Log("deploying the wiki: namespace %s (manifests/wiki-namespace.yaml) and a Deployment with an emptyDir (wiki.yaml)", WikiNamespace)
	for _, m := range []string{"wiki-namespace.yaml", "wiki.yaml"} {
		if err := e.Apply(ctx, m); err != nil {
			return err
		}
	}
	if _, err := e.Kubectl(ctx, "", "-n", WikiNamespace, "rollout", "status", "deployment/wiki", "--timeout=3m"); err != nil {
		return e.withPodState(ctx, WikiNamespace, err)
	}
	return nil
}

// ApplyWikiPolicy applies the wiki's policy (manifests/wiki-policy.yaml) with its
// backups going to the storage location location.
func (e *Env) ApplyWikiPolicy(ctx context.Context, location string) error {
	m, err := e.Manifest("wiki-policy.yaml")
	if err != nil {
		return err
	}
	m = strings.Replace(m, "storageLocation: default", "storageLocation: "+location, 1)
	_, err = e.Kubectl(ctx, m, "apply", "--server-side", "-f", "-")
	return err
}

// DeleteNamespace deletes namespace ns as a person does, `kubectl delete namespace`,
// and waits until it is gone with everything in it (its pods and volumes, its
// PodVolumeBackups and BackupRepositories; the snapshots stay in the store).
func (e *Env) DeleteNamespace(ctx context.Context, ns string) error {
	e.Log("deleting namespace %s: kubectl delete namespace %s", ns, ns)
	if _, err := e.Kubectl(ctx, "", "delete", "namespace", ns, "--wait=false"); err != nil {
		return err
	}
	if _, err := e.Kubectl(ctx, "", "wait", "--for=delete", "namespace/"+ns, "--timeout=5m"); err != nil {
		return e.withPodState(ctx, ns, err)
	}
	return nil
}

// ApplyRestoreFirst applies the VolumeRestore manifest file, as a person or a pipeline
// does before the application, and waits as they would until the restore knows what
// the store holds for the namespace (it may first connect the repositories the store
// holds, and recover their keys): its Ready reason is WaitingForPods, or
// BackupsNotAdopted when the store holds only an earlier namespace's backups. It
// returns the restore's Ready message, which says whether pods created now wait
// for their data (ReadyForPods) or why not.
func (e *Env) ApplyRestoreFirst(ctx context.Context, ns, file, name string) (string, error) {
	e.Log("applying the VolumeRestore %s/%s (%s) before the application, and waiting until it has read the store", ns, name, file)
	if err := e.Apply(ctx, file); err != nil {
		return "", err
	}
	vr := &backupv1alpha1.VolumeRestore{}
	var msg string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vr); err != nil {
			return false, nil
		}
		c := apimeta.FindStatusCondition(vr.Status.Conditions, backupv1alpha1.ConditionReady)
		if c == nil {
			return false, nil
		}
		msg = c.Message
		return c.Reason == "WaitingForPods" || c.Reason == "BackupsNotAdopted", nil
	})
	if err != nil {
		out, _ := e.Kubectl(ctx, "", "-n", ns, "get", "vr", name, "-o", "wide")
		repos, _ := e.Kubectl(ctx, "", "-n", ns, "get", "brepo", "-o", "wide")
		return "", fmt.Errorf("VolumeRestore %s/%s did not finish reading the store: %w\n%s\n%s", ns, name, err, out, repos)
	}
	return msg, nil
}

// RestoreNamespace applies, from the same manifests as at first, namespace ns, then
// the VolumeRestore name, waits until pods created from then on wait for their data,
// then applies the application (files) and waits until the restore Completed.
func (e *Env) RestoreNamespace(ctx context.Context, ns, namespaceFile, restoreFile, name string, files ...string) (*backupv1alpha1.VolumeRestore, error) {
	e.Log("applying namespace %s again (%s), with the annotation that adopts its earlier backups", ns, namespaceFile)
	if err := e.Apply(ctx, namespaceFile); err != nil {
		return nil, err
	}
	if _, err := e.ApplyRestoreFirst(ctx, ns, restoreFile, name); err != nil {
		return nil, err
	}
	// The restore may have answered for the namespace as it was a moment ago (applied
	// again without its annotation, say); it follows the namespace at once.
	if err := e.WaitRestoreReadyForPods(ctx, ns, name, time.Minute); err != nil {
		return nil, err
	}
	for _, f := range files {
		e.Log("applying the application again (%s)", f)
		if err := e.Apply(ctx, f); err != nil {
			return nil, err
		}
	}
	return e.WaitRestoreIn(ctx, ns, name)
}

// RestoreWiki is the wiki's namespace restored after its deletion: namespace,
// VolumeRestore, then Deployment, from the same manifests. The wiki's new pod waits
// in restore-wait until its pages are back and starts on them.
func (e *Env) RestoreWiki(ctx context.Context) (*Restored, error) {
	vr, err := e.RestoreNamespace(ctx, WikiNamespace, "wiki-namespace.yaml", "wiki-restore.yaml", WikiRestore, "wiki.yaml")
	if err != nil {
		return nil, err
	}
	pod, err := e.PodIn(ctx, WikiNamespace, map[string]string{"app": "wiki"}, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	logs, err := e.Kubectl(ctx, "", "-n", WikiNamespace, "logs", pod.Name, "-c", "wiki")
	if err != nil {
		return nil, err
	}
	return &Restored{Pod: pod, Restore: vr, Log: logs}, nil
}

// WaitRestoreReadyForPods waits until the VolumeRestore name says that pods created
// from now on wait for their data (ReadyForPods), and fails with its last message
// after timeout.
func (e *Env) WaitRestoreReadyForPods(ctx context.Context, ns, name string, timeout time.Duration) error {
	vr := &backupv1alpha1.VolumeRestore{}
	var last string
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if err := e.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, vr); err != nil {
			last = err.Error()
			return false, nil
		}
		c := apimeta.FindStatusCondition(vr.Status.Conditions, backupv1alpha1.ConditionReady)
		if c == nil {
			last = "no Ready condition"
			return false, nil
		}
		last = c.Reason + ": " + c.Message
		return c.Reason == "WaitingForPods" && strings.Contains(c.Message, ReadyForPods), nil
	})
	if err != nil {
		return fmt.Errorf("VolumeRestore %s/%s is not ready for the application: %w (%s)", ns, name, err, last)
	}
	e.Log("the VolumeRestore says: %s", last)
	return nil
}
