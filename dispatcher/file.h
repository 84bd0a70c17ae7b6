/* file: the one reader of whole files the operator points at (configuration, secrets,
 * SQL). Regular files only: a FIFO or a device named by mistake must fail at once, not
 * hold start-up forever. */
#ifndef OUTBOXD_FILE_H
#define OUTBOXD_FILE_H

#include <stddef.h>

/* *err for a path that is not a regular file (a FIFO, a device, a directory). */
#define FILE_ERR_NOT_REGULAR (-2)

/* The whole file, NUL-terminated, its length in *len; NULL with *err an errno value
 * (EFBIG above max bytes) or FILE_ERR_NOT_REGULAR. Free with free(). */
char *file_read(const char *path, size_t max, size_t *len, int *err);

/* 0 when path opens for reading, without blocking, as a regular file (or, with allow_dir,
 * a directory); else an errno value or FILE_ERR_NOT_REGULAR, as file_read gives. For a
 * file read later (a CA bundle, a token): a FIFO would block whoever opens it. */
int file_check(const char *path, int allow_dir);

/* Text for an *err of file_read or file_check. */
const char *file_strerror(int err);

#endif
