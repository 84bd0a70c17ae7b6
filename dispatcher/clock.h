/* clock: the two clocks the daemon reads. Monotonic time for deadlines and durations,
 * wall-clock time only to compare with timestamps the database wrote. */
#ifndef OUTBOXD_CLOCK_H
#define OUTBOXD_CLOCK_H

#include <stdint.h>

/* Milliseconds on CLOCK_MONOTONIC (never jumps; meaningless across processes). */
uint64_t clock_mono_ms(void);

/* The same clock in seconds, with sub-millisecond precision. */
double clock_mono_s(void);

/* Seconds since the epoch on CLOCK_REALTIME, with sub-second precision. */
double clock_wall_s(void);

#endif
