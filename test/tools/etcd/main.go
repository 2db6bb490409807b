// Command etcd is etcd v3.6 built from the Go module proxy: the upstream server
// entry point, unchanged, so `make tools` needs no release download.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
