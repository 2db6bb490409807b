// Package version says which Holdfast this binary is, as the Go toolchain recorded it
// from the checkout it was built in; snapshots carry it so that a store can be read
// years later knowing what wrote it.
package version

import (
	"runtime/debug"
	"sync"
)

// String is the module version the binary was built as (a tag, or a pseudo-version
// made of the commit time and hash, "+dirty" for uncommitted changes), or "devel".
var String = sync.OnceValue(func() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok || bi.Main.Version == "" || bi.Main.Version == "(devel)" {
		return "devel"
	}
	return bi.Main.Version
})
