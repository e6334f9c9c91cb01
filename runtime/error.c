#include "error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char error_message[1024];

const char *herd_errmsg(void) {
  return error_message;
}

int herd_seterr(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(error_message, sizeof error_message, fmt, ap);
  va_end(ap);
  return code;
}

void herd_clearerr(void) {
  error_message[0] = '\0';
}
