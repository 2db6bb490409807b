package agent

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/holdfast-dev/holdfast/agent/mover"
	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// What a backup left out reaches status.skipped, and its event is a Warning only
// when something the user had (a FIFO, a device node) is not in the snapshot.
func TestSkippedStatusAndEvent(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        *mover.Skipped
		want      *v1.SkippedEntries
		eventType string
		msg       string
	}{
		{name: "nothing reported", in: nil},
		{name: "all zero", in: &mover.Skipped{}},
		{name: "live volume", in: &mover.Skipped{Vanished: 3, ChangedType: 1},
			want: &v1.SkippedEntries{Vanished: 3, ChangedType: 1}, eventType: corev1.EventTypeNormal,
			msg: "the snapshot left out 3 entries that vanished while read, 1 entry that changed type while read (status.skipped)"},
		{name: "socket", in: &mover.Skipped{Sockets: 1},
			want: &v1.SkippedEntries{Sockets: 1}, eventType: corev1.EventTypeNormal,
			msg: "the snapshot left out 1 socket (status.skipped)"},
		{name: "special files", in: &mover.Skipped{Sockets: 2, FIFOs: 1, Devices: 4},
			want: &v1.SkippedEntries{Sockets: 2, FIFOs: 1, Devices: 4}, eventType: corev1.EventTypeWarning,
			msg: "the snapshot left out 2 sockets, 1 FIFO, 4 device nodes (status.skipped)"},
		{name: "cache directories", in: &mover.Skipped{CacheDirectories: 2},
			want: &v1.SkippedEntries{CacheDirectories: 2}, eventType: corev1.EventTypeNormal,
			msg: "the snapshot left out 2 cache directories' contents (spec.files.excludeCaches) (status.skipped)"},
		{name: "one cache directory and a vanished file", in: &mover.Skipped{Vanished: 1, CacheDirectories: 1},
			want: &v1.SkippedEntries{Vanished: 1, CacheDirectories: 1}, eventType: corev1.EventTypeNormal,
			msg: "the snapshot left out 1 entry that vanished while read, 1 cache directory's contents (spec.files.excludeCaches) (status.skipped)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := toSkipped(tc.in)
			if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
				t.Fatalf("toSkipped(%+v) = %+v, want %+v", tc.in, got, tc.want)
			}
			eventType, msg, ok := skippedEvent(got)
			if ok != (tc.want != nil) || eventType != tc.eventType || msg != tc.msg {
				t.Errorf("skippedEvent = %q %q %v, want %q %q %v", eventType, msg, ok, tc.eventType, tc.msg, tc.want != nil)
			}
		})
	}
}

// What a restore did not give back reaches status.notRestored, and its event is a
// Warning when a device node or an attribute is missing.
func TestNotRestoredStatusAndEvent(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        *mover.NotRestored
		want      *v1.NotRestoredEntries
		eventType string
		msg       string
	}{
		{name: "nothing reported", in: nil},
		{name: "all zero", in: &mover.NotRestored{}},
		{name: "sockets only", in: &mover.NotRestored{Other: 2},
			want: &v1.NotRestoredEntries{Other: 2}, eventType: corev1.EventTypeNormal,
			msg: "the restore did not give back 2 other entries (sockets) (status.notRestored)"},
		{name: "attributes refused", in: &mover.NotRestored{Attributes: 1},
			want: &v1.NotRestoredEntries{Attributes: 1}, eventType: corev1.EventTypeWarning,
			msg: "the restore did not give back 1 extended attribute (status.notRestored)"},
		{name: "a FIFO restic could not place", in: &mover.NotRestored{FIFOs: 1},
			want: &v1.NotRestoredEntries{FIFOs: 1}, eventType: corev1.EventTypeWarning,
			msg: "the restore did not give back 1 FIFO (status.notRestored)"},
		{name: "devices and more", in: &mover.NotRestored{Devices: 2, Attributes: 5, Other: 1},
			want: &v1.NotRestoredEntries{Devices: 2, Attributes: 5, Other: 1}, eventType: corev1.EventTypeWarning,
			msg: "the restore did not give back 2 device nodes, 5 extended attributes, 1 other entry (socket) (status.notRestored)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := toNotRestored(tc.in)
			if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
				t.Fatalf("toNotRestored(%+v) = %+v, want %+v", tc.in, got, tc.want)
			}
			eventType, msg, ok := notRestoredEvent(got)
			if ok != (tc.want != nil) || eventType != tc.eventType || msg != tc.msg {
				t.Errorf("notRestoredEvent = %q %q %v, want %q %q %v", eventType, msg, ok, tc.eventType, tc.msg, tc.want != nil)
			}
		})
	}
}
