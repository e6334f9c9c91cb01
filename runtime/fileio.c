#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"

int herd_sync_directory(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
  if (!dir) return -1;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (fd < 0) return -1;
  int status = fsync(fd);
  if (status && (errno == EINVAL || errno == ENOTSUP)) status = 0;
  int err = errno;
  close(fd);
  errno = err;
  return status;
}

// Every byte of `data`, retrying short writes and EINTR; -1 with errno on failure.
static int write_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return -1;
    }
    data += n, len -= (size_t)n;
  }
  return 0;
}

int herd_write_text_atomic(const char *path, const char *text) {
  size_t temp_size = strlen(path) + 32;
  char *temp = malloc(temp_size);
  if (!temp) return herd_seterr(HERD_ENOMEM, "%s: out of memory", path);
  snprintf(temp, temp_size, "%s.tmp-%ld", path, (long)getpid());
  int fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    int status = herd_seterr(HERD_EIO, "%s: cannot create %s: %s", path, temp, strerror(errno));
    free(temp);
    return status;
  }
  const char *step = NULL;
  if (write_all(fd, text, strlen(text)) || write_all(fd, "\n", 1)) step = "writing";
  if (!step && fsync(fd)) step = "syncing";
  int err = errno;
  if (close(fd) && !step) step = "closing", err = errno;
  if (!step && rename(temp, path)) step = "renaming", err = errno;
  if (!step && herd_sync_directory(path)) step = "syncing the directory of", err = errno;
  int status = HERD_OK;
  if (step) {
    unlink(temp);
    status = herd_seterr(HERD_EIO, "%s: %s %s: %s", path, step, temp, strerror(err));
  }
  free(temp);
  return status;
}
