// defines: herd_status codes (HERD_OK, HERD_E*), herd_errmsg, herd_seterr, herd_clearerr
//
// Every runtime function returns an int status: 0 on success, a negative HERD_E* code on failure,
// and leaves a message for the caller in a thread-local slot. Nothing in libherd prints or exits.
#ifndef HERD_ERROR_H
#define HERD_ERROR_H

enum herd_status {
  HERD_OK = 0,
  HERD_EINVAL = -1,     // a bad argument: wrong type, shape, name or value
  HERD_EIO = -2,        // the file system said no
  HERD_ENOMEM = -3,     // an allocation failed
  HERD_EDB = -4,        // SQLite reported an error
  HERD_ENOTFOUND = -5,  // the thing named does not exist
  HERD_ECORRUPT = -6,   // a file exists but is not what it should be
  HERD_EBUSY = -7,      // another process holds a lock for too long
  HERD_ESTATE = -8,     // the object is in the wrong state for this call (e.g. run finished)
  HERD_EDEVICE = -9,    // the GPU or its libraries (CUDA runtime, cuBLAS) reported a failure
};

// The message of the last failure on this thread ("" when none).
const char *herd_errmsg(void);
// Records a printf-style message and returns `code`, so `return herd_seterr(...)` reads well.
int herd_seterr(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void herd_clearerr(void);

#endif
