package minio

import (
	"errors"
	"syscall"
)

// Pause freezes the server with SIGSTOP: the kernel still accepts connections but
// nothing answers, so clients hang as on a stalled network. Tests use it to hold an
// upload in flight deterministically; Resume (or Close) must follow.
func (s *Server) Pause() error { return s.signal(syscall.SIGSTOP) }

// Resume lets a paused server run again.
func (s *Server) Resume() error { return s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return errors.New("minio is not running")
	}
	return s.cmd.Process.Signal(sig)
}
