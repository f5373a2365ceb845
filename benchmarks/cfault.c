/* Anonymous page-fault rate of the host kernel: the yardstick for the emulator's fault path.
 *
 * Usage: cfault NPAGES ROUNDS
 * Each round: mmap NPAGES anonymous private pages, write one byte to every page (one minor
 * fault each), munmap. Prints one JSON object: pages, rounds, seconds (touch + unmap, best
 * round), minor faults counted by getrusage, faults per second.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static long minflt(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_minflt;
}

int main(int argc, char **argv)
{
	long npages = argc > 1 ? atol(argv[1]) : 65536;
	int rounds = argc > 2 ? atoi(argv[2]) : 5;
	long page = sysconf(_SC_PAGESIZE);
	double best = 1e30;
	long best_faults = 0;

	if (npages <= 0 || rounds <= 0) {
		fprintf(stderr, "usage: cfault NPAGES ROUNDS\n");
		return 2;
	}
	for (int r = 0; r < rounds; r++) {
		size_t len = (size_t)npages * page;
		long f0 = minflt();
		double t0 = now();
		volatile char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		for (long i = 0; i < npages; i++)
			p[i * page] = (char)i;
		munmap((void *)p, len);
		double dt = now() - t0;
		long faults = minflt() - f0;
		if (dt < best) {
			best = dt;
			best_faults = faults;
		}
	}
	printf("{\"pages\": %ld, \"rounds\": %d, \"page_size\": %ld, \"seconds\": %.9f, "
	       "\"minor_faults\": %ld, \"faults_per_second\": %.1f}\n",
	       npages, rounds, page, best, best_faults, npages / best);
	return 0;
}
