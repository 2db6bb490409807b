// Command holdfast-dashboard writes Holdfast's Grafana dashboard
// (config/grafana/holdfast-dashboard.json): `go generate ./internal/dashboard` or
// `make generate`.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/holdfast-dev/holdfast/internal/dashboard"
)

func main() {
	out := flag.String("out", "config/grafana/holdfast-dashboard.json", "the file to write")
	flag.Parse()
	data, err := dashboard.JSON()
	if err == nil {
		err = os.WriteFile(*out, data, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "holdfast-dashboard:", err)
		os.Exit(1)
	}
}
