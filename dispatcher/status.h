/* `outboxd status`: a snapshot of the queue read from PostgreSQL, as a table or JSON. */
#ifndef OUTBOXD_STATUS_H
#define OUTBOXD_STATUS_H

/* Returns 0 healthy, 1 when a threshold is exceeded or the database is unreachable,
 * 2 on a usage or configuration error. */
int status_main(int argc, char **argv);

#endif
