package policy

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestParseSchedule(t *testing.T) {
	tests := []struct {
		schedule v1.Schedule
		wantErr  string
	}{
		{v1.Schedule{Cron: "0 2 * * *"}, ""},
		{v1.Schedule{Cron: "*/15 * * * 1-5", TimeZone: "Europe/Paris"}, ""},
		{v1.Schedule{Cron: "0 2 * * *", TimeZone: "Europe/Nowhere"}, "spec.schedule.timeZone: unknown time zone"},
		{v1.Schedule{Cron: "0 24 * * *"}, "spec.schedule.cron"},
		{v1.Schedule{Cron: "@daily"}, "not macros"},
		{v1.Schedule{Cron: "CRON_TZ=UTC 0 2 * * *"}, "not macros or TZ="},
	}
	for _, tt := range tests {
		_, err := parseSchedule(&tt.schedule)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%+v: %v", tt.schedule, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%+v: error %v, want %q", tt.schedule, err, tt.wantErr)
		}
	}
}

func TestLatestDue(t *testing.T) {
	s, err := parseSchedule(&v1.Schedule{Cron: "30 2 * * *", TimeZone: "Europe/Paris"})
	if err != nil {
		t.Fatal(err)
	}
	after := mustTime("2026-03-27T12:00:00Z")
	tests := []struct {
		now     string
		want    string
		wantDue bool
		comment string
	}{
		{"2026-03-28T01:29:59Z", "", false, "before the first tick (02:30 CET is 01:30Z)"},
		{"2026-03-28T01:30:00Z", "2026-03-28T01:30:00Z", true, "exactly at the tick"},
		// 29 March 2026 is the switch to summer time in Paris: 02:30 does not exist.
		{"2026-03-31T09:00:00Z", "2026-03-31T00:30:00Z", true, "three missed ticks run once, for the latest (CEST)"},
	}
	for _, tt := range tests {
		got, due := s.latestDue(after, mustTime(tt.now))
		if due != tt.wantDue || (due && !got.Equal(mustTime(tt.want))) {
			t.Errorf("%s: latestDue(%s) = %v, %v; want %s, %v", tt.comment, tt.now, got, due, tt.want, tt.wantDue)
		}
	}
	if next := s.next(mustTime("2026-03-28T01:30:00Z")); !next.Equal(mustTime("2026-03-30T00:30:00Z")) {
		t.Errorf("next = %v", next)
	}
}

func TestJitterOffset(t *testing.T) {
	w := time.Hour
	a := jitterOffset(w, "shop", "/pvc/data")
	if a != jitterOffset(w, "shop", "/pvc/data") {
		t.Fatal("offset is not stable")
	}
	if a < 0 || a >= w {
		t.Fatalf("offset %v outside [0, %v)", a, w)
	}
	if jitterOffset(0, "shop", "/pvc/data") != 0 {
		t.Error("no window, yet an offset")
	}
	seen := map[time.Duration]bool{}
	for _, p := range []string{"/pvc/a", "/pvc/b", "/pvc/c", "/pvc/d", "/pvc/e"} {
		seen[jitterOffset(w, "shop", p)] = true
	}
	if len(seen) < 4 {
		t.Errorf("offsets of five volumes are not spread: %v", seen)
	}
}

func TestRunName(t *testing.T) {
	at := mustTime("2026-01-02T03:04:05Z")
	if got := runName("nightly", at, TriggerSchedule, ""); got != "nightly-20260102030405" {
		t.Errorf("runName = %q", got)
	}
	now := runName("nightly", at, TriggerRunNow, "commit-1")
	if !strings.HasPrefix(now, "nightly-20260102030405n") || len(now) != len("nightly-20260102030405n")+6 {
		t.Errorf("run-now runName = %q", now)
	}
	// Two tokens in the same second are two runs (review L9); the same token is the
	// same run, so a pass retried after a crash finds the backups it created.
	if other := runName("nightly", at, TriggerRunNow, "commit-2"); other == now {
		t.Errorf("two run-now tokens in one second share the run name %q", now)
	}
	if again := runName("nightly", at, TriggerRunNow, "commit-1"); again != now {
		t.Errorf("the same token gave %q, then %q", now, again)
	}
	long := strings.Repeat("p", 253)
	for _, trigger := range []string{TriggerSchedule, TriggerRunNow} {
		if got := runName(long, at, trigger, "t"); len(got) > 63 {
			t.Errorf("runName of a long policy is %d characters: %q", len(got), got)
		}
	}
	if runName(long+"a", at, TriggerSchedule, "") == runName(long+"b", at, TriggerSchedule, "") {
		t.Error("long policy names collide")
	}
}

func TestSkipReason(t *testing.T) {
	running := &corev1.Pod{Spec: corev1.PodSpec{NodeName: "n"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	block := corev1.PersistentVolumeBlock
	tests := []struct {
		name  string
		pod   *corev1.Pod
		vol   corev1.VolumeSource
		claim string
		pvc   *corev1.PersistentVolumeClaim
		want  string
	}{
		{"emptyDir", running, corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}, "", nil, ""},
		{"claim", running, corev1.VolumeSource{}, "c", &corev1.PersistentVolumeClaim{}, ""},
		{"hostPath", running, corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{}}, "", nil, SkipHostPath},
		{"secret", running, corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{}}, "", nil, SkipSecret},
		{"configMap", running, corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}, "", nil, SkipConfigMap},
		{"downwardAPI", running, corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{}}, "", nil, SkipDownwardAPI},
		{"image", running, corev1.VolumeSource{Image: &corev1.ImageVolumeSource{}}, "", nil, SkipImage},
		{"projected", running, corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}}, "", nil, SkipProjected},
		{"token", running, corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{ConfigMap: &corev1.ConfigMapProjection{}}, {ServiceAccountToken: &corev1.ServiceAccountTokenProjection{}}}}}, "", nil, SkipServiceAccountToken},
		{"block", running, corev1.VolumeSource{}, "c", &corev1.PersistentVolumeClaim{Spec: corev1.PersistentVolumeClaimSpec{VolumeMode: &block}}, SkipBlockMode},
		{"missing claim", running, corev1.VolumeSource{}, "c", nil, SkipClaimNotFound},
		{"no node", &corev1.Pod{}, corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}, "", nil, SkipNoNode},
		{"pending", &corev1.Pod{Spec: corev1.PodSpec{NodeName: "n"}, Status: corev1.PodStatus{Phase: corev1.PodPending}},
			corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}, "", nil, SkipPodNotRunning},
	}
	for _, tt := range tests {
		vol := &corev1.Volume{Name: "v", VolumeSource: tt.vol}
		if got := skipReason(tt.pod, vol, tt.claim, tt.pvc, false, false); got != tt.want {
			t.Errorf("%s: skipReason = %q, want %q", tt.name, got, tt.want)
		}
	}
	// A pod for Windows is skipped, scheduled or not: no agent would ever take it.
	empty := &corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	for _, pod := range []*corev1.Pod{running, {}} {
		if got := skipReason(pod, empty, "", nil, false, true); got != SkipWindows {
			t.Errorf("a Windows pod on node %q: skipReason = %q", pod.Spec.NodeName, got)
		}
	}
}

func TestSnapshotWindows(t *testing.T) {
	snap := &snapshot{nodeOS: map[string]string{"win-1": "windows", "linux-1": "linux"}}
	tests := []struct {
		name string
		spec corev1.PodSpec
		want bool
	}{
		{"on a Linux node", corev1.PodSpec{NodeName: "linux-1"}, false},
		{"on a node without the label", corev1.PodSpec{NodeName: "other"}, false},
		{"on a Windows node", corev1.PodSpec{NodeName: "win-1"}, true},
		{"node selector", corev1.PodSpec{NodeSelector: map[string]string{labelOS: "windows"}}, true},
		{"pod OS", corev1.PodSpec{OS: &corev1.PodOS{Name: corev1.Windows}}, true},
	}
	for _, tt := range tests {
		if got := snap.windows(&corev1.Pod{Spec: tt.spec}); got != tt.want {
			t.Errorf("%s: windows = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestSkippedStatus(t *testing.T) {
	total, got := skippedStatus(map[string][]string{
		SkipSecret:   {"ns/p6/s", "ns/p5/s", "ns/p4/s", "ns/p3/s", "ns/p2/s", "ns/p1/s"},
		SkipHostPath: {"ns/p/h"},
	})
	if total != 7 || len(got) != 2 || got[0].Reason != SkipHostPath || got[1].Count != 6 {
		t.Fatalf("skippedStatus = %d %+v", total, got)
	}
	if len(got[1].Examples) != maxExamples || got[1].Examples[0] != "ns/p1/s" {
		t.Errorf("examples %v: want the first %d in name order", got[1].Examples, maxExamples)
	}
	if _, none := skippedStatus(nil); none != nil {
		t.Errorf("no skips gives %v", none)
	}
}

func TestSummarize(t *testing.T) {
	done := metav1.Now()
	s := summarize([]v1.PodVolumeBackup{
		{Status: v1.PodVolumeBackupStatus{Phase: v1.RunCompleted, BytesUploaded: 10, CompletionTime: &done}},
		{Status: v1.PodVolumeBackupStatus{Phase: v1.RunCanceled}},
		{Status: v1.PodVolumeBackupStatus{Phase: v1.RunInProgress, BytesUploaded: 5}},
	})
	if s.total != 3 || s.completed != 1 || s.failed != 1 || s.bytes != 15 || s.lastDone == nil {
		t.Errorf("summarize = %+v", s)
	}
}

func TestShortestInterval(t *testing.T) {
	from := mustTime("2026-01-01T00:00:00Z")
	tests := []struct {
		cron, tz string
		want     time.Duration
	}{
		{"0 * * * *", "UTC", time.Hour},
		{"*/15 * * * 1-5", "UTC", 15 * time.Minute},
		{"0 2 * * *", "UTC", 24 * time.Hour},
		// The day clocks go forward has 23 hours: a daily 03:00 comes an hour early.
		{"0 3 * * *", "Europe/Paris", 23 * time.Hour},
		{"0 0 1 1 *", "UTC", 365 * 24 * time.Hour},
	}
	for _, tt := range tests {
		s, err := parseSchedule(&v1.Schedule{Cron: tt.cron, TimeZone: tt.tz})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.shortestInterval(from); got != tt.want {
			t.Errorf("shortestInterval(%q in %s) = %s, want %s", tt.cron, tt.tz, got, tt.want)
		}
	}
}
