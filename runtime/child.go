package runtime

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"mecha/internal/apicatalog"
	"mecha/runtime/invoke"
	"mecha/runtime/membership"
)

// Child is the app process the runtime started from the command after
// "--".
type Child interface {
	// Signal sends sig to the app and the processes it started.
	Signal(sig syscall.Signal) error
	// Wait waits for the app to exit and returns its exit error.
	Wait() error
}

// ChildStarter starts an app command in dir ("" for the runtime's own)
// with env added to the runtime's environment.
type ChildStarter func(command []string, dir string, env []string) (Child, error)

// execChild is an app started with os/exec in its own process group,
// which dies with the runtime.
type execChild struct {
	cmd    *exec.Cmd
	reaper *exec.Cmd // nil without one
}

// StartProcess is the ChildStarter of `mecha run`: the app gets the
// runtime's stdio, its own process group (so that a signal reaches the
// processes it starts too), and SIGKILL when the runtime dies, even by
// kill -9, so that it never outlives the runtime holding its port.
//
// The kernel's parent-death signal reaches the app process only; the
// processes it started (`npm start` runs node, `sh -c` runs the app)
// would be left. So a reaper runs beside it: the mecha binary itself
// (ReapCommand), which the kernel signals when the runtime dies, and
// which then kills the app's whole process group.
func StartProcess(command []string, dir string, env []string) (Child, error) {
	cmd := exec.Command(command[0], command[1:]...)
	cmd.Dir = dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := execChild{cmd: cmd}
	if self, err := os.Executable(); err == nil && ReapCommand != "" {
		r := exec.Command(self, ReapCommand, strconv.Itoa(cmd.Process.Pid), strconv.Itoa(os.Getpid()))
		// Its own process group: a Ctrl-C at the terminal is for the
		// runtime, which stops the app gracefully, not for the reaper.
		// SIGWINCH is ignored by default: one that comes before the
		// reaper listens for it does not kill it, and its poll of its
		// parent notices the death instead.
		r.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGWINCH, Setpgid: true}
		if r.Start() == nil {
			c.reaper = r
		}
	}
	return c, nil
}

// ReapCommand is the hidden subcommand of the binary that runs Reap
// ("" runs no reaper: a binary that embeds the runtime without the
// subcommand).
var ReapCommand = ""

// Reap is the reaper of an app's process group pgid started by the
// runtime of pid parent: it waits until that runtime is gone (the kernel
// sends the reaper SIGWINCH when it dies; a poll of its parent covers a
// signal that came before the reaper listened), then kills the group.
func Reap(pgid, parent int) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGWINCH)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for os.Getppid() == parent {
		select {
		case <-sigs:
		case <-t.C:
			continue
		}
		break
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

func (c execChild) Signal(sig syscall.Signal) error { return syscall.Kill(-c.cmd.Process.Pid, sig) }

// Wait waits for the app, then ends its reaper.
func (c execChild) Wait() error {
	err := c.cmd.Wait()
	if c.reaper != nil {
		_ = c.reaper.Process.Kill()
		_ = c.reaper.Wait()
	}
	return err
}

// child runs one app's command for Run: it starts it with its app's API
// ports in its environment, reports its exit on exits, forwards signals
// and stops it on shutdown.
type child struct {
	h *appHost
	// exits takes the app's exit (Run selects on it); done is closed
	// once the app has exited.
	exits chan<- childExit
	done  chan struct{}

	// mu guards proc, which start sets and signal reads from the
	// signal goroutine.
	mu   sync.Mutex
	proc Child
}

// childExit is one app's command ending.
type childExit struct {
	app string
	err error
}

// childEnv is what an app learns of its runtime.
func (h *appHost) childEnv() []string {
	env := []string{
		"DAPR_HTTP_PORT=" + strconv.Itoa(port(h.httpLis.Addr())),
		"DAPR_GRPC_PORT=" + strconv.Itoa(port(h.grpcLis.Addr())),
		"APP_ID=" + h.spec.ID,
		invoke.EnvInstance + "=" + h.rt.node.InstanceID(),
		apicatalog.EnvFile + "=" + absPath(filepath.Join(h.rt.cfg.DataDir, "membership", membership.CacheFile)),
	}
	if h.spec.Port != 0 {
		env = append(env, "APP_PORT="+strconv.Itoa(h.spec.Port))
	}
	if h.rt.metricsLis != nil {
		env = append(env, "DAPR_METRICS_PORT="+strconv.Itoa(port(h.rt.metricsLis.Addr())))
	}
	return append(env, h.spec.Env...)
}

// absPath is p from the root, so that an app started in another
// directory (--app dir=…) finds it.
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

func (c *child) start() error {
	r, h := c.h.rt, c.h
	start := r.hooks.StartChild
	if start == nil {
		start = StartProcess
	}
	p, err := start(h.spec.Command, h.spec.Dir, h.childEnv())
	if err != nil {
		return fmt.Errorf("starting the app %s (%q): %w", h.spec.ID, h.spec.Command[0], err)
	}
	c.mu.Lock()
	c.proc = p
	c.mu.Unlock()
	h.log.Info("app started", "command", h.spec.Command, "dir", h.spec.Dir)
	go func() {
		err := p.Wait()
		if err != nil {
			err = fmt.Errorf("app %s: %w", h.spec.ID, err)
		}
		close(c.done)
		c.exits <- childExit{app: h.spec.ID, err: err}
	}()
	return nil
}

// signal forwards sig to the app, if it runs.
func (c *child) signal(sig syscall.Signal) {
	c.mu.Lock()
	p := c.proc
	c.mu.Unlock()
	if p != nil {
		_ = p.Signal(sig)
	}
}

// stop asks the app to stop, then kills it when the grace period ends
// (after at least a second: the app got the signal only now).
func (c *child) stop(grace context.Context) {
	c.mu.Lock()
	p := c.proc
	c.mu.Unlock()
	if p == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	_ = p.Signal(syscall.SIGTERM)
	wait := time.Second
	if dl, ok := grace.Deadline(); ok && time.Until(dl) > wait {
		wait = time.Until(dl)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		c.h.log.Warn("app did not exit in time; killing it", "app", c.h.spec.ID)
		_ = p.Signal(syscall.SIGKILL)
		<-c.done
	}
}
