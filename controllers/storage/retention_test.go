package storage

import (
	"reflect"
	"testing"
	"time"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

func TestExpired(t *testing.T) {
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	// Backups every 6 hours over three days, plus one a year and a month earlier.
	var backups []RetentionCandidate
	for i, s := range []string{
		"2025-10-01T12:00:00Z", // a
		"2026-02-15T12:00:00Z", // b
		"2026-03-01T00:00:00Z", // c
		"2026-03-01T06:00:00Z", // d
		"2026-03-01T12:00:00Z", // e
		"2026-03-01T18:00:00Z", // f
		"2026-03-02T00:00:00Z", // g (Monday: a new ISO week)
		"2026-03-02T06:00:00Z", // h
		"2026-03-02T06:30:00Z", // i (same hour as h)
	} {
		backups = append(backups, RetentionCandidate{Name: string(rune('a' + i)), Time: at(s)})
	}
	for _, tc := range []struct {
		name string
		r    v1.Retention
		want []string
	}{
		{"keepLast 3", v1.Retention{KeepLast: 3}, []string{"a", "b", "c", "d", "e", "f"}},
		{"keepLast more than there are", v1.Retention{KeepLast: 100}, nil},
		{"keepHourly 2: same hour counts once", v1.Retention{KeepHourly: 2}, []string{"a", "b", "c", "d", "e", "f", "h"}},
		{"keepDaily 2", v1.Retention{KeepDaily: 2}, []string{"a", "b", "c", "d", "e", "g", "h"}},
		{"keepWeekly 2", v1.Retention{KeepWeekly: 2}, []string{"a", "b", "c", "d", "e", "g", "h"}},
		{"keepMonthly 3", v1.Retention{KeepMonthly: 3}, []string{"c", "d", "e", "f", "g", "h"}},
		{"keepYearly 5", v1.Retention{KeepYearly: 5}, []string{"b", "c", "d", "e", "f", "g", "h"}},
		{"rules add up", v1.Retention{KeepLast: 1, KeepDaily: 2, KeepYearly: 2}, []string{"b", "c", "d", "e", "g", "h"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Expired(backups, tc.r); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Expired = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestGuardAllows(t *testing.T) {
	for _, tc := range []struct {
		total, expiring int
		max             int32
		want            bool
	}{
		{10, 5, 50, true},
		{10, 6, 50, false},
		{10, 6, 0, false}, // 0 is the default, 50
		{3, 3, 100, true},
		{4, 1, 25, true},
		{4, 2, 25, false},
		{0, 0, 50, true},
	} {
		if got := GuardAllows(tc.total, tc.expiring, tc.max); got != tc.want {
			t.Errorf("GuardAllows(%d, %d, %d) = %v, want %v", tc.total, tc.expiring, tc.max, got, tc.want)
		}
	}
}
