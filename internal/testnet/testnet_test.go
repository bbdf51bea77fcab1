//go:build linux

package testnet

import (
	"net"
	"os/exec"
	"strings"
	"testing"
)

func TestPairCarriesUDPAndCleansUp(t *testing.T) {
	var names []string
	t.Run("pair", func(t *testing.T) {
		p := NewPair(t, Config{Queues: 2})
		names = []string{p.A.Name, p.B.Name}
		var srv *net.UDPConn
		if err := p.B.Do(func() (err error) {
			srv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: p.B.Addr.AsSlice(), Port: 0})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		var cli *net.UDPConn
		if err := p.A.Do(func() (err error) {
			cli, err = net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		if _, err := cli.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 16)
		n, from, err := srv.ReadFromUDP(buf)
		if err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("read %q, %v", buf[:n], err)
		}
		if !from.IP.Equal(p.A.Addr.AsSlice()) {
			t.Fatalf("from %v, want %v", from, p.A.Addr)
		}
	})
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s left behind", n)
		}
	}
}
