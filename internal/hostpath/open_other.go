//go:build !linux

package hostpath

import "errors"

// Open needs openat2, which only Linux has.
func Open(d Dir) (int, error) { return -1, errors.New("hostPath volumes are read on Linux only") }

// Check is Open's check.
func Check(d Dir) error { _, err := Open(d); return err }

// InHost needs openat2, which only Linux has.
func InHost(host, root string) (string, error) { return root, nil }
