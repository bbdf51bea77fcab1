// The C reference for `latprobe jitter`: the same loop, one pinned thread
// reading CLOCK_MONOTONIC through the vDSO and counting the gaps between
// two reads longer than a threshold, with no runtime around it.
//
//   cc -O2 -o /tmp/jitter scripts/jitter.c && /tmp/jitter CPU SECONDS [THRESHOLD_NS]
//
// It prints one JSON object with the keys latprobe jitter uses for the
// same figures: gaps, lost_pct, the largest gap, and the thread's
// voluntary and involuntary context switches over the run.
#define _GNU_SOURCE
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void switches(long *vol, long *invol) {
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/thread-self/status");
	FILE *f = fopen(path, "r");
	*vol = *invol = 0;
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		sscanf(line, "voluntary_ctxt_switches: %ld", vol);
		sscanf(line, "nonvoluntary_ctxt_switches: %ld", invol);
	}
	fclose(f);
}

int main(int argc, char **argv) {
	if (argc < 3) {
		fprintf(stderr, "usage: %s CPU SECONDS [THRESHOLD_NS]\n", argv[0]);
		return 2;
	}
	int cpu = atoi(argv[1]);
	double secs = atof(argv[2]);
	int64_t threshold = argc > 3 ? atoll(argv[3]) : 1000;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof set, &set) != 0) {
		perror("sched_setaffinity");
		return 1;
	}
	long vol0, invol0, vol1, invol1;
	switches(&vol0, &invol0);
	int64_t start = now_ns(), end = start + (int64_t)(secs * 1e9), last = start, lost = 0, maxgap = 0, gaps = 0;
	for (;;) {
		int64_t t = now_ns(), gap = t - last;
		if (gap > threshold) {
			gaps++;
			lost += gap;
			if (gap > maxgap)
				maxgap = gap;
		}
		last = t;
		if (t >= end)
			break;
	}
	switches(&vol1, &invol1);
	printf("{\"tool\":\"jitter.c\",\"cpu\":%d,\"gaps\":%ld,\"lost_pct\":%.4f,\"max_ns\":%ld,\"ctx_switches\":%ld,\"voluntary_switches\":%ld}\n",
	       cpu, (long)gaps, 100.0 * lost / (double)(last - start), (long)maxgap, invol1 - invol0, vol1 - vol0);
	return 0;
}
