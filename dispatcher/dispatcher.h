/* The dispatcher: one libevent loop that claims due messages, delivers them through the
 * SMTP sink, records outcomes (fenced on lease owner and attempt), and drains on SIGTERM. */
#ifndef OUTBOXD_DISPATCHER_H
#define OUTBOXD_DISPATCHER_H

/* `outboxd run [--config FILE]`: runs until SIGTERM/SIGINT. Returns the exit code:
 * 0 after a clean drain, 1 on a runtime failure, 2 on a configuration error. */
int dispatcher_main(int argc, char **argv);

#endif
