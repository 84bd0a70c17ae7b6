/* procstat: this process's CPU time, memory, file descriptors and start time, read
 * from /proc/self and getrlimit() for the standard process_* metrics (Linux only). */
#ifndef OUTBOXD_PROCSTAT_H
#define OUTBOXD_PROCSTAT_H

/* One snapshot. A field that could not be read is -1. */
struct procstat {
	double cpu_seconds;        /* user + system CPU time */
	double rss_bytes;          /* resident set size */
	double vsize_bytes;        /* virtual memory size */
	double open_fds;           /* entries in /proc/self/fd */
	double max_fds;            /* soft RLIMIT_NOFILE (a huge value when unlimited) */
	double start_time_seconds; /* process start, seconds since the Unix epoch */
};

/* The container's limits from the cgroup (v2 memory.max / cpu.max, else v1), so alerts
 * can say "90 % of the limit" without a second exporter. 0 means no limit. */
struct cgroup_limits {
	double memory_bytes;
	double cpu_cores;
};
void procstat_cgroup_limits(struct cgroup_limits *out);

/* Parses a memory limit: a byte count, or "max" (v2) or a v1 value of 2^60 or more, both
 * meaning no limit (0). Returns 0, or -1 when malformed. */
int procstat_parse_memory_limit(const char *text, double *bytes);

/* Parses cgroup v2 cpu.max ("QUOTA PERIOD", QUOTA "max" = no limit -> 0 cores).
 * Returns 0, or -1 when malformed. */
int procstat_parse_cpu_max(const char *text, double *cores);

/* Fills out from /proc. Returns 0 when every field was read, -1 when at least one
 * is missing (those fields are -1, the others are valid). */
int procstat_read(struct procstat *out);

/*
 * Parses the text of /proc/<pid>/stat (the command name may hold spaces and
 * parentheses). Sets CPU ticks (utime + stime), start time in ticks since boot,
 * vsize in bytes and rss in pages. Returns 0, or -1 when the text is malformed.
 */
int procstat_parse_stat(const char *text, unsigned long long *cpu_ticks, unsigned long long *start_ticks,
			unsigned long long *vsize, long long *rss_pages);

/* Finds the "btime" line of /proc/stat text. Returns 0 and sets *btime (seconds since
 * the epoch), or -1 when absent. */
int procstat_parse_btime(const char *text, unsigned long long *btime);

#endif
