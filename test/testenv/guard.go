package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// A test binary that dies without running its cleanup (killed by `go test -timeout`,
// by CI's own timeout, or by a signal) must not leave etcd and kube-apiserver running:
// envtest starts them in process groups of their own, so nothing else stops them. Each
// is therefore started through setpriv(1) with a parent-death signal: the kernel kills
// it when the thread that started it ends. That thread is held for the control plane's
// lifetime (startOnOwnThread), because Go ends a thread whenever a goroutine locked to
// it returns, and a child's parent is the thread, not the process.

// guardedBinaries are the binaries envtest starts as long-running children.
var guardedBinaries = []string{"etcd", "kube-apiserver"}

// guardBinaries makes dir a directory in which etcd and kube-apiserver are scripts that
// exec the real ones in toolsBin with a parent-death signal (SIGKILL); Start sets
// envtest's paths of the two to them.
func guardBinaries(dir, toolsBin string) (string, error) {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return "", fmt.Errorf("setpriv (util-linux) is needed to tie the test control plane to the test process: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, name := range guardedBinaries {
		script := fmt.Sprintf("#!/bin/sh\nexec %s --pdeathsig KILL -- %s \"$@\"\n", setpriv, filepath.Join(toolsBin, name))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// startOnOwnThread starts env from a goroutine locked to its OS thread, and keeps that
// thread until release is called: the parent-death signal of etcd and kube-apiserver
// fires when that thread ends, which is then when the test process ends or Stop has
// stopped them.
func startOnOwnThread(env *envtest.Environment) (cfg *rest.Config, release func(), err error) {
	type started struct {
		cfg *rest.Config
		err error
	}
	done := make(chan started)
	stop := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		cfg, err := env.Start()
		done <- started{cfg, err}
		<-stop
	}()
	s := <-done
	if s.err != nil {
		close(stop)
	}
	return s.cfg, func() { close(stop) }, s.err
}
