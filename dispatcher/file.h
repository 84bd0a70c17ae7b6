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

/* Text for an *err of file_read. */
const char *file_strerror(int err);

#endif
