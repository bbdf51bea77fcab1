// A stand-in for the Go runtime's monitor thread (sysmon): a thread that
// wakes every PERIOD_US microseconds and runs for WORK_US, and nothing
// else. Put it beside a C program (sockperf) on one of its CPUs to see
// what a Go process's own periodic wake-ups cost a spinning thread there:
//
//   cc -O2 -o /tmp/wakeup scripts/wakeup.c
//   taskset -c 1 /tmp/wakeup 10000 10 &   # 100 Hz, 10 us: sysmon's pace
//
// It runs until killed.
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

int main(int argc, char **argv) {
	long period = argc > 1 ? atol(argv[1]) : 10000;
	long work = argc > 2 ? atol(argv[2]) : 10;
	if (period <= 0 || work < 0) {
		return 2;
	}
	for (;;) {
		usleep(period);
		long end = now_ns() + work * 1000;
		while (now_ns() < end) {
		}
	}
}
