/* Unit tests for procstat: /proc/<pid>/stat parsing with awkward command names, the
 * btime lookup, and plausible live values for this test process. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "procstat.h"
#include "testutil.h"

/* A real line from a process called "a) b (c" so ')' and spaces appear in field 2. */
static const char stat_weird[] = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 1500 0 3 0 250 75 0 0 20 0 3 0 "
				 "123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

static void test_parse_stat(void)
{
	unsigned long long cpu = 0, start = 0, vsize = 0;
	long long rss = 0;

	CHECK_INT(procstat_parse_stat(stat_weird, &cpu, &start, &vsize, &rss), 0);
	CHECK_INT(cpu, 325);
	CHECK_INT(start, 123456);
	CHECK_INT(vsize, 987654321);
	CHECK_INT(rss, 2048);

	CHECK_INT(procstat_parse_stat("1 (x) S 1 2 3", &cpu, &start, &vsize, &rss), -1);
	CHECK_INT(procstat_parse_stat("no parenthesis at all", &cpu, &start, &vsize, &rss), -1);
	CHECK_INT(procstat_parse_stat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 1 0 0 20 0 1 0 5 6 7\n", &cpu, &start, &vsize,
				      &rss),
		  -1);
	CHECK_INT(procstat_parse_stat("", &cpu, &start, &vsize, &rss), -1);
}

static void test_parse_btime(void)
{
	unsigned long long bt = 0;

	CHECK_INT(procstat_parse_btime("cpu  1 2 3\nintr 5 6\nbtime 1700000000\nprocesses 9\n", &bt), 0);
	CHECK_INT(bt, 1700000000);
	CHECK_INT(procstat_parse_btime("cpu 1\nxbtime 5\n", &bt), -1);
	CHECK_INT(procstat_parse_btime("btime x\n", &bt), -1);
}

static void test_parse_cgroup_limits(void)
{
	double v = -1;

	CHECK_INT(procstat_parse_memory_limit("268435456\n", &v), 0);
	CHECK(v == 268435456.0, "memory.max bytes %g", v);
	CHECK_INT(procstat_parse_memory_limit("max\n", &v), 0);
	CHECK(v == 0, "max = no limit %g", v);
	CHECK_INT(procstat_parse_memory_limit("9223372036854771712\n", &v), 0);
	CHECK(v == 0, "v1 unlimited = no limit %g", v);
	CHECK_INT(procstat_parse_memory_limit("", &v), -1);
	CHECK_INT(procstat_parse_memory_limit("12k\n", &v), -1);
	CHECK_INT(procstat_parse_memory_limit("maxi", &v), -1);
	CHECK_INT(procstat_parse_cpu_max("150000 100000\n", &v), 0);
	CHECK(v == 1.5, "cpu.max cores %g", v);
	CHECK_INT(procstat_parse_cpu_max("max 100000\n", &v), 0);
	CHECK(v == 0, "max = no limit %g", v);
	CHECK_INT(procstat_parse_cpu_max("100000 0\n", &v), -1);
	CHECK_INT(procstat_parse_cpu_max("100000\n", &v), -1);
	CHECK_INT(procstat_parse_cpu_max("x y", &v), -1);
}

static void test_live(void)
{
	struct procstat ps, ps2;
	int fd;
	volatile double spin = 0;
	long i;

	CHECK_INT(procstat_read(&ps), 0);
	CHECK(ps.rss_bytes > 0, "rss %g", ps.rss_bytes);
	CHECK(ps.vsize_bytes >= ps.rss_bytes, "vsize %g < rss %g", ps.vsize_bytes, ps.rss_bytes);
	CHECK(ps.open_fds >= 3, "open fds %g", ps.open_fds);
	CHECK(ps.max_fds >= ps.open_fds, "max fds %g", ps.max_fds);
	CHECK(ps.cpu_seconds >= 0, "cpu %g", ps.cpu_seconds);
	/* Started within the last hour and not in the future (1s of tick rounding). */
	CHECK(ps.start_time_seconds <= (double)time(NULL) + 1 && ps.start_time_seconds > (double)time(NULL) - 3600,
	      "start %f now %ld", ps.start_time_seconds, (long)time(NULL));

	fd = open("/dev/null", O_RDONLY);
	for (i = 0; i < 20000000; i++)
		spin += (double)i;
	CHECK_INT(procstat_read(&ps2), 0);
	CHECK(ps2.open_fds == ps.open_fds + 1, "fd count follows open(): %g -> %g", ps.open_fds, ps2.open_fds);
	CHECK(ps2.cpu_seconds >= ps.cpu_seconds, "cpu monotonic");
	CHECK(ps2.start_time_seconds == ps.start_time_seconds, "start time stable");
	close(fd);
}

int main(void)
{
	test_parse_stat();
	test_parse_btime();
	test_parse_cgroup_limits();
	test_live();
	return test_summary("procstat");
}
