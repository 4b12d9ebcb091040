package cluster

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// component is a control plane process as kwokctl started it.
type component struct {
	pidFile string
	pid     int
	args    []string
	cwd     string
}

func (c *Cluster) components() ([]component, error) {
	pidFiles, err := filepath.Glob(filepath.Join(c.WorkDir, "clusters", c.Name, "pids", "*.pid"))
	if err != nil {
		return nil, err
	}
	var out []component
	for _, f := range pidFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return nil, fmt.Errorf("component %s: %w", filepath.Base(f), err)
		}
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if err != nil {
			return nil, err
		}
		out = append(out, component{pidFile: f, pid: pid, cwd: cwd,
			args: strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")})
	}
	return out, nil
}

func (p component) start() error {
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Dir = p.cwd
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("restarting %s: %w", filepath.Base(p.pidFile), err)
	}
	go func() { _ = cmd.Wait() }()
	return os.WriteFile(p.pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
}

func alive(pid int) bool {
	// A zombie still answers signal 0; its state in /proc tells.
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// StopAPIServer kills kube-apiserver (SIGKILL: an outage, not a shutdown)
// and returns a function that starts it again with the same command line.
// The restart also starts every other component that exited meanwhile, as
// the kubelet or systemd would: kube-controller-manager and kube-scheduler
// exit when they cannot renew their leader lease for 10 s.
func (c *Cluster) StopAPIServer() (restart func() error, err error) {
	all, err := c.components()
	if err != nil {
		return nil, err
	}
	var apiserver *component
	for i := range all {
		if filepath.Base(all[i].pidFile) == "kube-apiserver.pid" {
			apiserver = &all[i]
		}
	}
	if apiserver == nil {
		return nil, fmt.Errorf("no kube-apiserver pid file in %s", c.WorkDir)
	}
	if err := syscall.Kill(apiserver.pid, syscall.SIGKILL); err != nil {
		return nil, err
	}
	if err := WaitFor(context.Background(), 10*time.Second, func(context.Context) (bool, error) {
		return !alive(apiserver.pid), nil
	}); err != nil {
		return nil, fmt.Errorf("kube-apiserver (pid %d) survived SIGKILL: %w", apiserver.pid, err)
	}
	return func() error {
		for _, p := range all {
			if !alive(p.pid) {
				if err := p.start(); err != nil {
					return err
				}
			}
		}
		return nil
	}, nil
}
