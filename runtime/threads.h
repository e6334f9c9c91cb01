// defines: herd_threads, herd_set_threads, herd_thread_id
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
// The calling thread's number in the innermost OpenMP team (0 outside one): an index into
// per-thread scratch.
int herd_thread_id(void);

#endif
