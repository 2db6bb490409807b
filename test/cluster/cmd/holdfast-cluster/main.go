// Command holdfast-cluster starts and stops the local single-node Kubernetes cluster
// of the end-to-end tests and `make demo` (see package test/cluster).
//
//	holdfast-cluster [-dir DIR] up|down|images|status|kubeconfig
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/holdfast-dev/holdfast/test/cluster"
)

func main() {
	dir := flag.String("dir", cluster.DefaultStateDir(), "state directory of the cluster ($HOLDFAST_CLUSTER_DIR)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, `usage: holdfast-cluster [-dir DIR] COMMAND

commands:
  up          start the cluster (builds and imports the images); a no-op when it runs
  down        stop every process, undo every mount, remove the network and the files
  images      rebuild the images (holdfast from this checkout) and import them
  status      show the daemons and whether the node is Ready
  kubeconfig  print the path of the cluster-admin kubeconfig

flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	c := cluster.New(*dir)
	c.Log = func(format string, args ...any) {
		fmt.Printf("%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	if cmd := flag.Arg(0); cmd == "up" || cmd == "down" || cmd == "images" {
		unlock, lockErr := cluster.Lock(ctx)
		if lockErr != nil {
			fmt.Fprintln(os.Stderr, "holdfast-cluster:", lockErr)
			os.Exit(1)
		}
		defer unlock()
	}
	switch flag.Arg(0) {
	case "up":
		if err = c.Up(ctx); err != nil && len(c.Status(ctx).Components) > 0 {
			err = fmt.Errorf("%w\nthe partly started cluster is left for inspection (logs in %s/logs); `make cluster-down` removes it", err, c.StateDir)
		}
	case "down":
		err = c.Down(ctx)
	case "images":
		err = c.ImportImages(ctx)
	case "status":
		st := c.Status(ctx)
		for _, comp := range st.Components {
			state := "stopped"
			if comp.Running {
				state = "running"
			}
			fmt.Printf("%-24s %-8s pid %-7d %s\n", comp.Name, state, comp.PID, comp.Log)
		}
		fmt.Println(st.Detail)
		if !st.Ready {
			os.Exit(1)
		}
	case "kubeconfig":
		if _, err = os.Stat(c.Kubeconfig()); err == nil {
			fmt.Println(c.Kubeconfig())
		}
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "holdfast-cluster:", err)
		os.Exit(1)
	}
}
