// Command probe is a tiny static program the containerize tests run inside
// containers, so that they do not depend on latprobe being built:
//
//	probe capeff            prints the CapEff line of /proc/self/status
//	probe echo ADDR SECS    answers latprobe requests on UDP ADDR for at
//	                        most SECS seconds over kernel sockets
//	probe open PATH         opens PATH read-write and prints "opened PATH"
//	probe fifo              switches to SCHED_FIFO priority 1 and prints
//	                        "fifo ok"
package main

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/lowlat/lowlat/bypass"
	"github.com/lowlat/lowlat/latency"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: probe capeff | probe echo ADDR SECS")
	}
	switch args[0] {
	case "capeff":
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "CapEff:") {
				fmt.Println(l)
				return nil
			}
		}
		return fmt.Errorf("no CapEff in /proc/self/status")
	case "fifo":
		if err := setFIFO(); err != nil {
			return err
		}
		fmt.Println("fifo ok")
		return nil
	case "open":
		if len(args) != 2 {
			return fmt.Errorf("usage: probe open PATH")
		}
		f, err := os.OpenFile(args[1], os.O_RDWR, 0)
		if err != nil {
			return err
		}
		fmt.Println("opened", args[1])
		return f.Close()
	case "echo":
		if len(args) != 3 {
			return fmt.Errorf("usage: probe echo ADDR SECS")
		}
		addr, err := netip.ParseAddrPort(args[1])
		if err != nil {
			return err
		}
		secs, err := strconv.Atoi(args[2])
		if err != nil {
			return err
		}
		c, err := bypass.ListenUDP(addr, bypass.Options{Backend: "kernel"})
		if err != nil {
			return err
		}
		fmt.Println("listening", c.LocalAddr())
		time.AfterFunc(time.Duration(secs)*time.Second, func() { c.Close() })
		var s latency.EchoServer
		err = s.ServePacket(c)
		fmt.Println("echoed", s.Stats().Echoed)
		return err
	}
	return fmt.Errorf("unknown command %q", args[0])
}
