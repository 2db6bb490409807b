package policy

import (
	"time"

	v1 "github.com/holdfast-dev/holdfast/apis/backup/v1alpha1"
)

// LongestInterval is the longest time between two consecutive ticks of a policy's
// schedule in the next maxIntervalTicks ticks (or the next four years) after from, in
// the schedule's time zone: how old a volume's last backup may be when the schedule
// keeps its promise (a daylight-saving day that lengthens an interval counts).
// Zero without a schedule or when it ticks fewer than twice there; an error when it
// does not parse. The monitoring collector exports it per volume.
func LongestInterval(s *v1.Schedule, from time.Time) (time.Duration, error) {
	cs, err := parseSchedule(s)
	if err != nil || cs == nil {
		return 0, err
	}
	_, longest := cs.intervals(from)
	return longest, nil
}
