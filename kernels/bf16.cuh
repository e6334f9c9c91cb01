// defines: herd_device_bf16_from_f32, herd_device_f32_from_bf16
//
// bf16 as raw uint16_t bits on the device, for the .cu files of kernels/: the conversions of
// herd_f32_to_bf16 / herd_bf16_to_f32 (runtime/tensor.c), bit for bit.
#ifndef HERD_KERNELS_BF16_CUH
#define HERD_KERNELS_BF16_CUH

#include <cstdint>

// The top half of the f32, rounded by adding 0x7fff plus the lowest kept bit (ties to even); a
// NaN keeps its top bits and is made quiet.
__device__ inline uint16_t herd_device_bf16_from_f32(float value) {
  uint32_t bits = __float_as_uint(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x0040u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return (uint16_t)(bits >> 16);
}

__device__ inline float herd_device_f32_from_bf16(uint16_t bits) {
  return __uint_as_float((uint32_t)bits << 16);
}

#endif
