package restorewait

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeMarker(t *testing.T, volume, name, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(volume, MarkerDir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(volume, MarkerDir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWaitReturnsOnceEveryVolumeIsMarkedAndRemovesMarkers(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	writeMarker(t, a, "uid-1", "")
	writeMarker(t, b, "other-restore", "") // another restore's marker must survive

	done := make(chan error, 1)
	go func() {
		done <- Wait(context.Background(), Options{Volumes: []string{a, b}, RestoreUID: "uid-1", Interval: 5 * time.Millisecond})
	}()
	select {
	case err := <-done:
		t.Fatalf("Wait returned before volume b was marked: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	writeMarker(t, b, "uid-1", "")
	if err := <-done; err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if _, err := os.Stat(filepath.Join(a, MarkerDir)); !os.IsNotExist(err) {
		t.Errorf("marker directory in a should be gone, stat err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(b, MarkerDir, "uid-1")); !os.IsNotExist(err) {
		t.Errorf("marker uid-1 in b should be gone, stat err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(b, MarkerDir, "other-restore")); err != nil {
		t.Errorf("another restore's marker was removed: %v", err)
	}
}

func TestWaitFailsWithTheAgentsReason(t *testing.T) {
	a := t.TempDir()
	writeMarker(t, a, "uid-1"+FailedSuffix, "snapshot k123 not found in the repository\n")
	err := Wait(context.Background(), Options{Volumes: []string{a}, RestoreUID: "uid-1", Interval: time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "snapshot k123 not found in the repository") {
		t.Fatalf("Wait error = %v, want the agent's reason", err)
	}
}

func TestWaitRejectsBadArguments(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no volume", Options{RestoreUID: "x"}, "no --volume given"},
		{"no uid", Options{Volumes: []string{"/v"}}, "is not a UID"},
		{"path in uid", Options{Volumes: []string{"/v"}, RestoreUID: "../x"}, "is not a UID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Wait(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestWaitStopsWhenCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Wait(ctx, Options{Volumes: []string{t.TempDir()}, RestoreUID: "u", Interval: time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "stopped while waiting for 1 volume(s)") {
		t.Fatalf("error = %v", err)
	}
}
