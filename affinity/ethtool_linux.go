//go:build linux

package affinity

import (
	"bytes"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// InterfaceDriver returns the kernel driver of iface ("virtio_net",
// "mlx5_core", "veth"), as `ethtool -i IF` shows it: the ETHTOOL_GDRVINFO
// ioctl, else the device's driver link in sysfs. It is "" when neither
// answers.
func InterfaceDriver(iface string) string {
	if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
		info, err := unix.IoctlGetEthtoolDrvinfo(fd, iface)
		unix.Close(fd)
		if err == nil {
			if name := string(bytes.TrimRight(info.Driver[:], "\x00")); name != "" {
				return name
			}
		}
	}
	if l, err := os.Readlink(filepath.Join("/sys/class/net", iface, "device", "driver")); err == nil {
		return filepath.Base(l)
	}
	return ""
}
