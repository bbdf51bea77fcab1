//go:build linux

package containerize

import (
	"bufio"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lowlat/lowlat/latency"
)

const serverPort = 7471

// Suite measures every placement and backend with latprobe client against
// latprobe server and returns one cell each, in table order. A cell that
// cannot run says why in Skipped; Suite fails only when it cannot start at
// all or ctx ends. Each cell removes what it created before the next one
// starts.
func Suite(ctx context.Context, o SuiteOptions) (*SuiteReport, error) {
	if o.Binary == "" {
		return nil, errors.New("containerize: no latprobe binary given")
	}
	// A dynamically linked latprobe takes its loader and libraries into
	// each container (WriteBundle); fail now if the loader misses one.
	objs, err := SharedObjects(o.Binary)
	if err != nil {
		return nil, err
	}
	for _, p := range o.Placements {
		if !slices.Contains(Placements, p) {
			return nil, fmt.Errorf("containerize: placement %q: want one of %s", p, strings.Join(Placements, ", "))
		}
	}
	for _, b := range o.Backends {
		if !slices.Contains(SuiteBackends, b) {
			return nil, fmt.Errorf("containerize: backend %q: want one of %s", b, strings.Join(SuiteBackends, ", "))
		}
	}
	if o.Engine == "" {
		o.Engine = "runc"
	}
	if _, err := exec.LookPath(o.Engine); err != nil {
		return nil, fmt.Errorf("containerize: %s not found: install it (apt-get install %s)", o.Engine, o.Engine)
	}
	if o.Count == 0 {
		o.Count = 10000
	}
	if o.Warmup == 0 {
		o.Warmup = min(o.Count/10, 1000)
	}
	if o.OutDir != "" {
		abs, err := filepath.Abs(o.OutDir)
		if err != nil {
			return nil, err
		}
		o.OutDir = abs
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return nil, fmt.Errorf("containerize: out dir: %w", err)
		}
	}
	rep := &SuiteReport{SharedObjects: objs}
	defer rep.SetRatios()
	for _, p := range Placements {
		if len(o.Placements) > 0 && !slices.Contains(o.Placements, p) {
			continue
		}
		for _, b := range SuiteBackends {
			if len(o.Backends) > 0 && !slices.Contains(o.Backends, b) {
				continue
			}
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			if o.Progress != nil {
				o.Progress(p, b)
			}
			c := Cell{Placement: p, Backend: b}
			if err := runCell(ctx, o, &c); err != nil {
				if ctx.Err() != nil {
					return rep, ctx.Err()
				}
				c.Skipped = skipReason(err)
			}
			rep.Cells = append(rep.Cells, c)
		}
	}
	return rep, nil
}

// CheckStatic fails unless path is an ELF executable with no program
// interpreter, which a FROM-scratch image holding the binary alone needs.
// The suite and WriteBundle do not need it: they copy a dynamically linked
// binary's loader and libraries in (SharedObjects).
func CheckStatic(path string) error {
	if path == "" {
		return errors.New("containerize: no latprobe binary given")
	}
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("containerize: binary %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("containerize: %s is dynamically linked; build it with CGO_ENABLED=0 go build -o latprobe ./tools/latprobe", path)
		}
	}
	return nil
}

// endpoint is where one end runs: a host process (in the host's network
// namespace) or a container.
type endpoint struct {
	container bool
	netns     *Netns
	iface     string
	addr      netip.Addr
}

func runCell(ctx context.Context, o SuiteOptions, c *Cell) (err error) {
	var u Undo
	defer func() { err = errors.Join(err, u.Run()) }()
	loop := netip.MustParseAddr("127.0.0.1")
	var srv, cli endpoint
	switch c.Placement {
	case "host", "container-hostnet":
		if c.Backend == "afxdp" {
			return errors.New("afxdp needs an Ethernet interface; this placement runs over loopback")
		}
		srv = endpoint{container: c.Placement != "host", addr: loop}
		cli = endpoint{addr: loop}
	case "netns", "container-both":
		ns1, err := NewNetns(&u, NetnsPrefix)
		if err != nil {
			return err
		}
		ns2, err := NewNetns(&u, NetnsPrefix)
		if err != nil {
			return err
		}
		a, b, err := NewVeth(&u, ns1, ns2, netip.MustParsePrefix("10.199.99.0/30"))
		if err != nil {
			return err
		}
		inContainer := c.Placement == "container-both"
		srv = endpoint{container: inContainer, netns: ns1, iface: a.Name, addr: a.Addr}
		cli = endpoint{container: inContainer, netns: ns2, iface: b.Name, addr: b.Addr}
	case "container-netns":
		ns, err := NewNetns(&u, NetnsPrefix)
		if err != nil {
			return err
		}
		prefix, err := FreeSubnet()
		if err != nil {
			return err
		}
		h, n, err := NewVeth(&u, nil, ns, prefix)
		if err != nil {
			return err
		}
		srv = endpoint{container: true, netns: ns, iface: n.Name, addr: n.Addr}
		cli = endpoint{iface: h.Name, addr: h.Addr}
	default:
		return fmt.Errorf("placement %q unknown", c.Placement)
	}
	port := serverPort
	if srv.netns == nil {
		if port, err = freeUDPPort(); err != nil {
			return err
		}
	}
	server := netip.AddrPortFrom(srv.addr, uint16(port))
	limit := time.Duration(o.Count+o.Warmup)*time.Millisecond + 60*time.Second
	sargs := []string{"server", "--backend", c.Backend, "--addr", server.String(), "--duration", limit.String()}
	if c.Backend == "afxdp" {
		sargs = append(sargs, "--iface", srv.iface)
	}
	ready, err := startEnd(ctx, &u, o, srv, sargs, c)
	if err != nil {
		return err
	}
	if err := waitFor(ctx, ready, "latprobe server: udp", 10*time.Second); err != nil {
		return err
	}
	cargs := []string{"client", "--backend", c.Backend, "--peer", server.String(),
		"--count", strconv.Itoa(o.Count), "--warmup", strconv.Itoa(o.Warmup), "--json"}
	if c.Backend == "afxdp" {
		cargs = append(cargs, "--iface", cli.iface, "--addr", netip.AddrPortFrom(cli.addr, serverPort+1).String())
	} else if cli.netns != nil || cli.iface != "" {
		cargs = append(cargs, "--addr", netip.AddrPortFrom(cli.addr, 0).String())
	}
	if o.OutDir != "" {
		name := c.Placement + "-" + c.Backend + ".hlog"
		if cli.container {
			cargs = append(cargs, "--hlog", "/out/"+name)
		} else {
			cargs = append(cargs, "--hlog", filepath.Join(o.OutDir, name))
		}
		c.Hlog = filepath.Join(o.OutDir, name)
	}
	out, err := runEnd(ctx, &u, o, cli, cargs, limit)
	if err != nil {
		return err
	}
	r, err := parseClientJSON(out)
	if err != nil {
		return err
	}
	c.RTT, c.Samples, c.Lost = &r.RTT, r.Samples, r.Lost
	return nil
}

// output is what one end has written so far.
type output interface {
	Stdout() string
	Stderr() string
	Exited() bool
}

type procEnd struct {
	out, errb syncBuffer
	done      chan struct{}
}

func (p *procEnd) Stdout() string { return p.out.String() }
func (p *procEnd) Stderr() string { return p.errb.String() }
func (p *procEnd) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (e endpoint) options(o SuiteOptions, backend string, args []string) Options {
	opt := Options{Binary: o.Binary, Args: args, Backend: backend, CPUs: o.CPUs}
	if e.netns != nil {
		opt.NetnsPath = e.netns.Path
	}
	if o.OutDir != "" && args[0] == "client" {
		opt.Binds = map[string]string{"/out": o.OutDir}
	}
	return opt
}

// startEnd starts one end in the background, registering its stop with u.
func startEnd(ctx context.Context, u *Undo, o SuiteOptions, e endpoint, args []string, c *Cell) (output, error) {
	if e.container {
		opt := e.options(o, c.Backend, args)
		b, err := WriteBundle(u, "", opt)
		if err != nil {
			return nil, err
		}
		return Start(u, o.Engine, b, opt)
	}
	p := &procEnd{done: make(chan struct{})}
	cmd := exec.Command(o.Binary, args...)
	if e.netns != nil {
		cmd = exec.Command("ip", append([]string{"netns", "exec", e.netns.Name, o.Binary}, args...)...)
	}
	cmd.SysProcAttr = dieWithParent()
	cmd.Stdout, cmd.Stderr = &p.out, &p.errb
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start latprobe: %w", err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	u.Push(fmt.Sprintf("kill %d", cmd.Process.Pid), func() error {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(3 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
		return nil
	})
	return p, nil
}

// runEnd runs one end to completion (at most limit) and returns its
// standard output.
func runEnd(ctx context.Context, u *Undo, o SuiteOptions, e endpoint, args []string, limit time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	if e.container {
		return Run(ctx, o.Engine, "", e.options(o, args[2], args), limit)
	}
	cmd := exec.CommandContext(ctx, o.Binary, args...)
	if e.netns != nil {
		cmd = exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", e.netns.Name, o.Binary}, args...)...)
	}
	cmd.SysProcAttr = dieWithParent()
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("latprobe client: %w: %s", err, lastLine(errb.String()))
	}
	return out.String(), nil
}

// dieWithParent makes a host end get SIGKILL when the suite dies
// (prctl(PR_SET_PDEATHSIG)), so that a suite killed outright leaves no
// latprobe process behind; the sweep removes the rest.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

func waitFor(ctx context.Context, e output, marker string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(e.Stdout(), marker) {
		if e.Exited() {
			return fmt.Errorf("server exited: %s", lastLine(e.Stderr()))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server did not start in %v: %s", timeout, lastLine(e.Stderr()))
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func parseClientJSON(out string) (latency.Report, error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "{") {
			var r latency.Report
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				return r, fmt.Errorf("client JSON: %w", err)
			}
			return r, nil
		}
	}
	return latency.Report{}, fmt.Errorf("no JSON from latprobe client: %s", lastLine(out))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

func freeUDPPort() (int, error) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a UDP port: %w", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port, nil
}

// skipReason shortens the errors a user meets most into what to do.
func skipReason(err error) string {
	msg := err.Error()
	if strings.Contains(msg, "prohibited for !root") {
		return "the kernel's verifier rejects the XDP program for lack of CAP_PERFMON: this latprobe predates the steering " +
			"program that loads with CAP_BPF alone; rebuild it"
	}
	return msg
}
