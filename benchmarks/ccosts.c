/* Costs of this machine's kernel that smmu's cost model (smmu/runtime/costs.py) rests on.
 *
 * Usage: ccosts ROUNDS
 * Prints one JSON object, each figure the median over ROUNDS rounds, in nanoseconds:
 *   wakeup_ns        futex ping-pong between two threads: half a round trip, i.e. one
 *                    FUTEX_WAKE + the sleeper being scheduled in (what a sleeping lock
 *                    waiter pays when the holder releases: "wakeup")
 *   handoff_ns       an atomic flag ping-ponged between two spinning threads: half a round
 *                    trip, i.e. one modified cache line moving to the other core (what a
 *                    spinning waiter pays when the holder releases: "lock_handoff")
 *   switch_ns        the same futex ping-pong with both threads on one CPU: one FUTEX_WAKE +
 *                    a context switch to the woken thread, no IPI ("context_switch")
 *   lock_ns          an uncontended atomic exchange + release store ("lock")
 *   shootdown_ns     mprotect(PROT_READ) then mprotect(PROT_READ|PROT_WRITE) of one touched
 *                    page while a second thread of the process spins on the other CPU, minus
 *                    the same pair with no second thread: one remote TLB flush's IPI round
 *                    trip (the write-protect flushes; x86 pte_needs_flush() skips the flush
 *                    of a pure permission upgrade) ("tlb_shootdown")
 *   mprotect_ns      the same mprotect pair single-threaded: two system calls, VMA split
 *                    and merge, one local flush (a loose upper bound of "tlb_flush_local")
 *   cpus             online CPUs (the two-thread figures need two)
 */
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PINGS 2000
#define MPROTECTS 2000

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static long futex(atomic_int *addr, int op, int val)
{
	return syscall(SYS_futex, addr, op, val, NULL, NULL, 0);
}

static void pin(int cpu)
{
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

/* ------------------------------------------------------------------ futex ping-pong */
static atomic_int turn;     /* 0: main's turn, 1: the partner's */

static void wait_turn(int me)
{
	while (atomic_load(&turn) != me)
		futex(&turn, FUTEX_WAIT_PRIVATE, !me);
}

static void give_turn(int other)
{
	atomic_store(&turn, other);
	futex(&turn, FUTEX_WAKE_PRIVATE, 1);
}

static int partner_cpu = 1;

static void *futex_partner(void *arg)
{
	(void)arg;
	pin(partner_cpu);
	for (int i = 0; i < PINGS; i++) {
		wait_turn(1);
		give_turn(0);
	}
	return NULL;
}

static double futex_round(void)
{
	pthread_t t;
	atomic_store(&turn, 0);
	pthread_create(&t, NULL, futex_partner, NULL);
	double t0 = now_ns();
	for (int i = 0; i < PINGS; i++) {
		give_turn(1);
		wait_turn(0);
	}
	double dt = now_ns() - t0;
	pthread_join(t, NULL);
	return dt / PINGS / 2;
}

/* ------------------------------------------------------------------ spin ping-pong */
static _Alignas(64) atomic_int flag;

static void *spin_partner(void *arg)
{
	(void)arg;
	pin(1);
	for (int i = 0; i < PINGS * 10; i++) {
		while (atomic_load_explicit(&flag, memory_order_acquire) != 1)
			;
		atomic_store_explicit(&flag, 0, memory_order_release);
	}
	return NULL;
}

static double spin_round(void)
{
	pthread_t t;
	atomic_store(&flag, 0);
	pthread_create(&t, NULL, spin_partner, NULL);
	double t0 = now_ns();
	for (int i = 0; i < PINGS * 10; i++) {
		atomic_store_explicit(&flag, 1, memory_order_release);
		while (atomic_load_explicit(&flag, memory_order_acquire) != 0)
			;
	}
	double dt = now_ns() - t0;
	pthread_join(t, NULL);
	return dt / (PINGS * 10) / 2;
}

/* ------------------------------------------------------------------ uncontended lock */
static double lock_round(void)
{
	static atomic_int lk;
	double t0 = now_ns();
	for (int i = 0; i < PINGS * 100; i++) {
		while (atomic_exchange_explicit(&lk, 1, memory_order_acquire))
			;
		atomic_store_explicit(&lk, 0, memory_order_release);
	}
	return (now_ns() - t0) / (PINGS * 100);
}

/* ------------------------------------------------------------------ TLB shootdown */
static atomic_int stop;
static volatile char *page;

static void *busy_partner(void *arg)
{
	(void)arg;
	pin(1);
	volatile char sink = 0;
	while (!atomic_load(&stop))
		sink += page[0];        /* keeps the mm live on the other CPU */
	return NULL;
}

static double mprotect_pairs(void)
{
	double t0 = now_ns();
	for (int i = 0; i < MPROTECTS; i++) {
		mprotect((void *)page, 4096, PROT_READ);
		mprotect((void *)page, 4096, PROT_READ | PROT_WRITE);
		page[0] = (char)i;      /* the PTE is writable and in the TLB again */
	}
	return (now_ns() - t0) / MPROTECTS;
}

static double shootdown_round(double *local)
{
	pthread_t t;
	*local = mprotect_pairs();
	atomic_store(&stop, 0);
	pthread_create(&t, NULL, busy_partner, NULL);
	usleep(1000);
	double remote = mprotect_pairs();
	atomic_store(&stop, 1);
	pthread_join(t, NULL);
	return remote - *local;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp);
	return v[n / 2];
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 7;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (rounds <= 0 || rounds > 1000) {
		fprintf(stderr, "usage: ccosts ROUNDS (1..1000)\n");
		return 2;
	}
	double *w = calloc(rounds, sizeof(double)), *h = calloc(rounds, sizeof(double));
	double *l = calloc(rounds, sizeof(double)), *s = calloc(rounds, sizeof(double));
	double *f = calloc(rounds, sizeof(double)), *c = calloc(rounds, sizeof(double));
	page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!w || !h || !l || !s || !f || !c || page == MAP_FAILED) {
		fprintf(stderr, "ccosts: out of memory\n");
		return 1;
	}
	page[0] = 1;
	pin(0);
	for (int r = 0; r < rounds; r++) {
		l[r] = lock_round();
		partner_cpu = 0;
		c[r] = futex_round();
		partner_cpu = 1;
		if (cpus >= 2) {
			w[r] = futex_round();
			h[r] = spin_round();
			s[r] = shootdown_round(&f[r]);
		} else {
			mprotect_pairs();
			f[r] = mprotect_pairs();
		}
	}
	printf("{\"rounds\": %d, \"cpus\": %ld, \"lock_ns\": %.1f, \"mprotect_ns\": %.1f, "
	       "\"switch_ns\": %.1f", rounds, cpus, median(l, rounds), median(f, rounds),
	       median(c, rounds));
	if (cpus >= 2)
		printf(", \"wakeup_ns\": %.1f, \"handoff_ns\": %.1f, \"shootdown_ns\": %.1f",
		       median(w, rounds), median(h, rounds), median(s, rounds));
	printf("}\n");
	return 0;
}
