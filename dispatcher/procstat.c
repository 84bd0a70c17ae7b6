/* procstat: reads /proc/self/stat, /proc/stat and /proc/self/fd with plain read()s.
 * These are in-memory files, so reading them on the event loop costs microseconds. */
#include "procstat.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Reads a small /proc file into dst (NUL-terminated). Returns the length or -1. */
static ssize_t read_small(const char *path, char *dst, size_t dstlen)
{
	size_t got = 0;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	while (got + 1 < dstlen) {
		n = read(fd, dst + got, dstlen - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	dst[got] = '\0';
	return got > 0 ? (ssize_t)got : -1;
}

int procstat_parse_stat(const char *text, unsigned long long *cpu_ticks, unsigned long long *start_ticks,
			unsigned long long *vsize, long long *rss_pages)
{
	/* The command name is the only field that can hold spaces or ')', so fields are
	 * counted from the last ')'. Field 3 (state) follows it. */
	const char *p = strrchr(text, ')');
	unsigned long long utime = 0, stime = 0;
	int field, seen = 0;
	char *end;

	if (p == NULL)
		return -1;
	p++;
	for (field = 3; field <= 24; field++) {
		while (*p == ' ')
			p++;
		if (*p == '\0' || *p == '\n')
			return -1;
		if (field == 14 || field == 15 || field == 22 || field == 23 || field == 24) {
			unsigned long long u = 0;
			long long s = 0;

			errno = 0;
			if (field == 24)
				s = strtoll(p, &end, 10);
			else
				u = strtoull(p, &end, 10);
			if (end == p || errno != 0 || (*end != ' ' && *end != '\n' && *end != '\0'))
				return -1;
			switch (field) {
			case 14:
				utime = u;
				break;
			case 15:
				stime = u;
				break;
			case 22:
				*start_ticks = u;
				break;
			case 23:
				*vsize = u;
				break;
			default:
				*rss_pages = s;
				break;
			}
			seen++;
			p = end;
		} else {
			while (*p != ' ' && *p != '\0' && *p != '\n')
				p++;
		}
	}
	if (seen != 5)
		return -1;
	*cpu_ticks = utime + stime;
	return 0;
}

int procstat_parse_btime(const char *text, unsigned long long *btime)
{
	const char *p = text;
	char *end;

	while (p != NULL && *p != '\0') {
		if (strncmp(p, "btime ", 6) == 0) {
			errno = 0;
			*btime = strtoull(p + 6, &end, 10);
			if (end == p + 6 || errno != 0)
				return -1;
			return 0;
		}
		p = strchr(p, '\n');
		if (p != NULL)
			p++;
	}
	return -1;
}

/* Counts open descriptors, leaving out the one the directory scan itself holds. */
static double count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	double n = 0;
	int own;

	if (d == NULL)
		return -1;
	own = dirfd(d);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (atoi(de->d_name) == own)
			continue;
		n++;
	}
	closedir(d);
	return n;
}

/* Boot time never changes while we run, so /proc/stat is read once. Its "intr" line,
 * which comes first, can be tens of kilobytes, so the file is read line by line. */
static unsigned long long boot_time(void)
{
	static unsigned long long cached;
	char *line = NULL;
	size_t cap = 0;
	FILE *f;

	if (cached != 0)
		return cached;
	f = fopen("/proc/stat", "re");
	if (f == NULL)
		return 0;
	while (getline(&line, &cap, f) > 0) {
		if (procstat_parse_btime(line, &cached) == 0)
			break;
	}
	free(line);
	fclose(f);
	return cached;
}

int procstat_read(struct procstat *out)
{
	char text[1024];
	unsigned long long cpu, start, vsize, btime;
	long long rss;
	long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
	struct rlimit rl;
	int rc = 0;

	out->cpu_seconds = out->rss_bytes = out->vsize_bytes = -1;
	out->start_time_seconds = -1;
	if (tck <= 0)
		tck = 100;
	if (page <= 0)
		page = 4096;
	if (read_small("/proc/self/stat", text, sizeof(text)) > 0 &&
	    procstat_parse_stat(text, &cpu, &start, &vsize, &rss) == 0) {
		out->cpu_seconds = (double)cpu / (double)tck;
		out->rss_bytes = (double)rss * (double)page;
		out->vsize_bytes = (double)vsize;
		btime = boot_time();
		if (btime > 0)
			out->start_time_seconds = (double)btime + (double)start / (double)tck;
		else
			rc = -1;
	} else {
		rc = -1;
	}
	out->open_fds = count_fds();
	if (out->open_fds < 0)
		rc = -1;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		out->max_fds = (double)rl.rlim_cur;
	} else {
		out->max_fds = -1;
		rc = -1;
	}
	return rc;
}

int procstat_parse_memory_limit(const char *text, double *bytes)
{
	unsigned long long v;
	char *end;

	if (strncmp(text, "max", 3) == 0 && (text[3] == '\0' || text[3] == '\n')) {
		*bytes = 0;
		return 0;
	}
	errno = 0;
	v = strtoull(text, &end, 10);
	if (end == text || errno != 0 || (*end != '\0' && *end != '\n') || text[0] == '-')
		return -1;
	/* v1 reports "unlimited" as a page-rounded LLONG_MAX */
	*bytes = v >= (1ULL << 60) ? 0 : (double)v;
	return 0;
}

int procstat_parse_cpu_max(const char *text, double *cores)
{
	unsigned long long quota, period;
	char *end;

	if (strncmp(text, "max ", 4) == 0) {
		*cores = 0;
		return 0;
	}
	errno = 0;
	quota = strtoull(text, &end, 10);
	if (end == text || *end != ' ' || errno != 0 || text[0] == '-')
		return -1;
	period = strtoull(end + 1, &end, 10);
	if (errno != 0 || period == 0 || (*end != '\0' && *end != '\n'))
		return -1;
	*cores = (double)quota / (double)period;
	return 0;
}

void procstat_cgroup_limits(struct cgroup_limits *out)
{
	char text[128], text2[64];
	long long quota;
	double period;

	out->memory_bytes = out->cpu_cores = 0;
	if (read_small("/sys/fs/cgroup/memory.max", text, sizeof(text)) > 0 ||
	    read_small("/sys/fs/cgroup/memory/memory.limit_in_bytes", text, sizeof(text)) > 0)
		(void)procstat_parse_memory_limit(text, &out->memory_bytes);
	if (read_small("/sys/fs/cgroup/cpu.max", text, sizeof(text)) > 0) {
		(void)procstat_parse_cpu_max(text, &out->cpu_cores);
	} else if (read_small("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", text, sizeof(text)) > 0 &&
		   read_small("/sys/fs/cgroup/cpu/cpu.cfs_period_us", text2, sizeof(text2)) > 0) {
		quota = strtoll(text, NULL, 10);
		period = strtod(text2, NULL);
		if (quota > 0 && period > 0)
			out->cpu_cores = (double)quota / period;
	}
}
