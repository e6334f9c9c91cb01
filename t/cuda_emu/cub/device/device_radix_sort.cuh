// cub::DeviceRadixSort::SortPairs emulated on the host for t/cuda_emu/run: a stable sort of the
// (key, value) pairs by the bits [begin_bit, end_bit) of the keys, ordered as CUB orders them
// (signed integers with the negatives first). CUB's two-call protocol: a call with a NULL
// temporary buffer only sets its size; the second call needs a buffer of that size in device
// memory, which the emulation scribbles on (CUB's contents are not the caller's to read).
#ifndef HERD_T_CUDA_EMU_CUB_DEVICE_RADIX_SORT_CUH
#define HERD_T_CUDA_EMU_CUB_DEVICE_RADIX_SORT_CUH

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "../../cuda_runtime.h"

namespace cub {

struct DeviceRadixSort {
  template <typename KeyT, typename ValueT, typename NumItemsT>
  static cudaError_t SortPairs(void *d_temp_storage, size_t &temp_storage_bytes,
                               const KeyT *d_keys_in, KeyT *d_keys_out, const ValueT *d_values_in,
                               ValueT *d_values_out, NumItemsT num_items, int begin_bit = 0,
                               int end_bit = sizeof(KeyT) * 8, cudaStream_t stream = 0) {
    static_assert(std::is_integral<KeyT>::value, "the emulation sorts integer keys");
    (void)stream;
    const size_t n = num_items > 0 ? (size_t)num_items : 0;
    // the size CUB would ask for, roughly: a second copy of keys and values, and histograms
    const size_t needed = n * (sizeof(KeyT) + sizeof(ValueT)) + 4096;
    if (!d_temp_storage) {
      temp_storage_bytes = needed;
      return cudaSuccess;
    }
    cudaError_t error;
    if (emu_skip_async_work(&error)) return error;
    if (begin_bit < 0 || end_bit > (int)sizeof(KeyT) * 8 || begin_bit >= end_bit ||
        temp_storage_bytes < needed)
      return fail_("bit range or temporary storage size");
    if (!emu_is_device_range(d_temp_storage, temp_storage_bytes))
      return fail_("temporary storage not in device memory");
    if (n == 0) return cudaSuccess;
    if (!emu_is_device_range(d_keys_in, n * sizeof(KeyT)) ||
        !emu_is_device_range(d_keys_out, n * sizeof(KeyT)) ||
        !emu_is_device_range(d_values_in, n * sizeof(ValueT)) ||
        !emu_is_device_range(d_values_out, n * sizeof(ValueT)))
      return fail_("keys or values not in device memory");
    EmuDeviceAccess access;
    typedef typename std::make_unsigned<KeyT>::type Bits;
    const Bits flip = std::is_signed<KeyT>::value ? (Bits)((Bits)1 << (sizeof(KeyT) * 8 - 1)) : 0;
    const int width = end_bit - begin_bit;
    const Bits mask =
        width >= (int)sizeof(Bits) * 8 ? (Bits) ~(Bits)0 : (Bits)(((Bits)1 << width) - 1);
    std::vector<Bits> ranks(n);
    for (size_t i = 0; i < n; i++)
      ranks[i] = (Bits)(((Bits)d_keys_in[i] ^ flip) >> begin_bit) & mask;
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), (size_t)0);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return ranks[a] < ranks[b]; });
    std::vector<KeyT> keys(n);
    std::vector<ValueT> values(n);
    for (size_t i = 0; i < n; i++) keys[i] = d_keys_in[order[i]], values[i] = d_values_in[order[i]];
    std::memset(d_temp_storage, 0xa5, temp_storage_bytes);
    std::memcpy(d_keys_out, keys.data(), n * sizeof(KeyT));
    std::memcpy(d_values_out, values.data(), n * sizeof(ValueT));
    return cudaSuccess;
  }

 private:
  static cudaError_t fail_(const char *why) {
    std::fprintf(stderr, "cuda_emu (cub::DeviceRadixSort::SortPairs): %s\n", why);
    return cudaErrorInvalidValue;
  }
};

}  // namespace cub

#endif
