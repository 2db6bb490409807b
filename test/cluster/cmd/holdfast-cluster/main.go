// Command holdfast-cluster starts and stops the local Kubernetes cluster of the
// end-to-end tests and `make demo` (see package test/cluster): one node by default,
// more with -nodes or $HOLDFAST_CLUSTER_NODES.
//
//	holdfast-cluster [-dir DIR] [-nodes N] up|down|images|status|kubeconfig [-nodes N]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/holdfast-dev/holdfast/test/cluster"
)

func main() {
	dir := flag.String("dir", cluster.DefaultStateDir(), "state directory of the cluster ($HOLDFAST_CLUSTER_DIR)")
	nodes := flag.Int("nodes", 0, fmt.Sprintf("number of nodes up starts, 1 to %d ($%s, default 1)", cluster.MaxNodes, cluster.NodesEnv))
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, `usage: holdfast-cluster [-dir DIR] [-nodes N] COMMAND [-nodes N]

commands:
  up          start the cluster (builds and imports the images); a no-op when it runs
  down        stop every process, undo every mount, remove the network and the files
  images      rebuild the images (holdfast from this checkout) and import them
  status      show the daemons, whether every node is Ready and the memory used
  kubeconfig  print the path of the cluster-admin kubeconfig

flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	// Flags may also follow the command: `holdfast-cluster up --nodes 2`.
	cmd := flag.Arg(0)
	_ = flag.CommandLine.Parse(flag.Args()[1:]) // exits on a bad flag
	if flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	// `flock LOCK holdfast-cluster up` hands its lock to us as an open descriptor;
	// the daemons `up` starts must not inherit it, or they hold the lock for as long
	// as the cluster runs and a later `flock LOCK holdfast-cluster down` waits for
	// ever.
	if err := closeInheritedOnExec(); err != nil {
		fmt.Fprintln(os.Stderr, "holdfast-cluster:", err)
		os.Exit(1)
	}
	c := cluster.New(*dir)
	if *nodes != 0 {
		c.Nodes = *nodes
	}
	c.Log = func(format string, args ...any) {
		fmt.Printf("%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	if cmd == "up" || cmd == "down" || cmd == "images" {
		unlock, lockErr := cluster.Lock(ctx)
		if lockErr != nil {
			fmt.Fprintln(os.Stderr, "holdfast-cluster:", lockErr)
			os.Exit(1)
		}
		defer unlock()
	}
	switch cmd {
	case "up":
		// A failed `up` leaves what it started; a running cluster that `up` declined
		// (another number of nodes) is not "partly started".
		if err = c.Up(ctx); err != nil {
			if st := c.Status(ctx); !st.Ready && len(st.Components) > 0 {
				err = fmt.Errorf("%w\nthe partly started cluster is left for inspection (logs in %s/logs); `make cluster-down` removes it", err, c.StateDir)
			}
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
		if rss, procs := c.MemoryUsage(); procs > 0 {
			fmt.Printf("%d node(s); %d MiB resident in %d processes (daemons, shims, containers)\n", st.Nodes, rss>>20, procs)
		}
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

// closeInheritedOnExec marks every descriptor above stderr close-on-exec: those this
// process inherited without the flag would otherwise pass on to every daemon.
func closeInheritedOnExec() error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
	return nil
}
