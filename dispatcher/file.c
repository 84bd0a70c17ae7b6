/* file: see file.h. */
#include "file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *file_strerror(int err)
{
	return err == FILE_ERR_NOT_REGULAR ? "not a regular file" : strerror(err);
}

int file_check(const char *path, int allow_dir)
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC), rc = 0;
	struct stat st;

	if (fd < 0)
		return errno;
	if (fstat(fd, &st) != 0 || !(S_ISREG(st.st_mode) || (allow_dir && S_ISDIR(st.st_mode))))
		rc = FILE_ERR_NOT_REGULAR;
	close(fd);
	return rc;
}

/* Opened without blocking (a FIFO with no writer would block in open) and checked with
 * fstat before a byte is read. */
char *file_read(const char *path, size_t max, size_t *len, int *err)
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	struct stat st;
	FILE *f;
	char *data;
	size_t n;

	if (fd < 0) {
		*err = errno;
		return NULL;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		*err = FILE_ERR_NOT_REGULAR;
		close(fd);
		return NULL;
	}
	f = fdopen(fd, "rb");
	if (!f) {
		*err = errno;
		close(fd);
		return NULL;
	}
	data = malloc(max + 1);
	if (!data) {
		fclose(f);
		*err = ENOMEM;
		return NULL;
	}
	n = fread(data, 1, max + 1, f);
	if (ferror(f)) {
		*err = errno ? errno : EIO;
		fclose(f);
		free(data);
		return NULL;
	}
	fclose(f);
	if (n > max) {
		*err = EFBIG;
		free(data);
		return NULL;
	}
	data[n] = '\0';
	*len = n;
	return data;
}
