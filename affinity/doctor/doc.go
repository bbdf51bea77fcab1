// Package doctor checks a Linux host for what spoils network latency and
// says how to fix each finding. It backs `latprobe doctor`.
//
// Each check reads the kernel's own controls (sysfs, procfs, cpuid) and
// changes nothing: C-state control and the cpuidle driver, the CPU
// frequency governor, isolated and nohz_full CPUs, irqbalance, transparent
// hugepages, automatic NUMA balancing, the busy-poll sysctls, timer
// migration, the clock source and invariant TSC, SMT, virtualization, and
// for a chosen interface its IRQ placement, queue count and XDP support.
//
//	r := doctor.Run(doctor.Options{Iface: "eth0"})
//	r.WriteText(os.Stdout)          // or json.Marshal(r)
//	if r.Worst() == doctor.Fail { os.Exit(1) }
package doctor
