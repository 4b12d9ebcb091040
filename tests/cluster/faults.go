package cluster

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StopAPIServer kills kube-apiserver (SIGKILL: an outage, not a shutdown)
// and returns a function that starts it again with the same command line
// from the cluster's directory, as kwokctl did.
func (c *Cluster) StopAPIServer() (restart func() error, err error) {
	pidFile := filepath.Join(c.WorkDir, "clusters", c.Name, "pids", "kube-apiserver.pid")
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return nil, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pidFile, err)
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, err
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return nil, err
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return nil, err
	}
	// Gone once its pid no longer answers.
	for deadline := time.Now().Add(10 * time.Second); syscall.Kill(pid, 0) == nil; {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("kube-apiserver (pid %d) survived SIGKILL", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return func() error {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = cwd
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("restarting kube-apiserver: %w", err)
		}
		go func() { _ = cmd.Wait() }()
		return os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	}, nil
}
