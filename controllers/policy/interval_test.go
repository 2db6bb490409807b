package policy

import (
	"testing"
	"time"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

func TestLongestInterval(t *testing.T) {
	from := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		schedule *v1.Schedule
		want     time.Duration
	}{
		{"no schedule", nil, 0},
		{"hourly", &v1.Schedule{Cron: "0 * * * *"}, time.Hour},
		{"daily", &v1.Schedule{Cron: "30 2 * * *"}, 24 * time.Hour},
		// Twice a day, unevenly: the longer gap is the one a volume can go without.
		{"6h and 18h apart", &v1.Schedule{Cron: "0 6,12 * * *"}, 18 * time.Hour},
		{"weekdays", &v1.Schedule{Cron: "0 1 * * 1-5"}, 72 * time.Hour},
		// In Berlin the clocks go back on 25 October 2026: that night is 25 hours long.
		{"daily across the end of summer time", &v1.Schedule{Cron: "0 1 * * *", TimeZone: "Europe/Berlin"}, 25 * time.Hour},
		{"monthly", &v1.Schedule{Cron: "0 0 1 * *"}, 31 * 24 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LongestInterval(tt.schedule, from)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("LongestInterval = %s, want %s", got, tt.want)
			}
		})
	}
	if _, err := LongestInterval(&v1.Schedule{Cron: "61 * * * *"}, from); err == nil {
		t.Error("a cron expression that does not parse gives no error")
	}
}
