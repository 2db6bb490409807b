package storage

import "testing"

func TestFormatBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 19180: "18.7 KiB",
		5 << 20: "5.0 MiB", 3<<30 + 1<<29: "3.5 GiB", 1 << 62: "4.0 EiB",
	} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
