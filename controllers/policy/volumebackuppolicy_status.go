package policy

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

type runSum struct {
	total, completed, failed int32
	bytes                    int64
	lastDone                 *metav1.Time
}

func summarize(pvbs []v1.PodVolumeBackup) runSum {
	var s runSum
	for _, b := range pvbs {
		s.total++
		switch b.Status.Phase {
		case v1.RunCompleted:
			s.completed++
		case v1.RunFailed, v1.RunCanceled:
			s.failed++
		}
		s.bytes += b.Status.BytesUploaded
		if t := b.Status.CompletionTime; t != nil && (s.lastDone == nil || t.After(s.lastDone.Time)) {
			s.lastDone = t
		}
	}
	return s
}
