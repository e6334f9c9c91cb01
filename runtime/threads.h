// defines: herd_threads, herd_set_threads
//
// The CPU thread count used by OpenMP loops and OpenBLAS: HERD_THREADS when set, else the
// number of online cores. Kernels split work so that results do not depend on this number.
#ifndef HERD_THREADS_H
#define HERD_THREADS_H

// Threads the CPU kernels use (reads HERD_THREADS on first call).
int herd_threads(void);
// Sets the OpenMP thread count (n >= 1; HERD_EINVAL otherwise). OpenBLAS is kept at one thread:
// matmuls are parallelised by herd over fixed tiles, so results do not depend on n.
int herd_set_threads(int n);

#endif
