// The short causal depthwise convolution + SiLU of each Mamba2 scan direction (model/mamba2.py,
// ScanDirection), read straight from the input projection's xBC columns:
//   out[t, c] = silu(bias[c] + sum_k weight[k, c] * xbc[t - K + 1 + k, c])   (zero before the start)
// in one pass per row, written as the three contiguous tensors the scan reads (x, B, C), where
// PyTorch makes a convolution pass, a SiLU pass and the scan's copies of B and C. With `reverse`
// the same is computed over the time-reversed sequence and written in that (scan) order, so the
// backward direction needs no flipped copy of the projection. Accumulation is float32 with the
// float32 weights, the output rounded once to the input's dtype. The PyTorch twin
// (causal_conv1d_ref, on the flipped slice for `reverse`) is the tests' oracle.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <vector>

#include "network.h"
#include "simd.h"

namespace network {
namespace {

constexpr int64_t kMaxTaps = 4;  // model/mamba2.py: CPU_CONV_MAX_TAPS

struct Conv {
  int64_t l, width, taps;      // sequence length, channels, kernel taps K
  int64_t batch_stride, step;  // of the input rows
  bool reverse;
};

// Where one output segment (x, B or C) takes its channels from and writes them to.
template <typename T>
struct Segment {
  int64_t offset, width;
  T* out;  // [b, l, width] contiguous
};

// Rows [begin, end) of the flattened [b, l] output. Each output value is computed in registers in
// one loop over the channels: its K input values (a row of zeros standing for the padding before
// the start), weights and bias in, the rounded SiLU out.
template <typename T, bool kFma, int kTaps>
__attribute__((always_inline)) inline void conv_rows(const T* in, const float* weight, const float* bias,
                                                     const Segment<T>* segments, int64_t n_segments, const Conv& s,
                                                     int64_t begin, int64_t end) {
  const std::vector<T> zeros(s.width, T{0});
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / s.l, t = r % s.l;
    const T* taps[kTaps];  // the input row each tap reads
    for (int k = 0; k < kTaps; ++k) {
      // Tap k looks K - 1 - k steps back in scan order: forwards that is an earlier row, over the
      // reversed sequence a later one.
      const int64_t back = kTaps - 1 - k;
      const int64_t src = s.reverse ? s.l - 1 - t + back : t - back;
      taps[k] = src < 0 || src >= s.l ? zeros.data() : in + b * s.batch_stride + src * s.step;
    }
    for (int64_t i = 0; i < n_segments; ++i) {
      const Segment<T>& seg = segments[i];
      T* o = seg.out + r * seg.width;
#pragma omp simd
      for (int64_t c = seg.offset; c < seg.offset + seg.width; ++c) {
        float acc = bias[c];
        for (int k = 0; k < kTaps; ++k) acc = splat::mul_add<kFma>(weight[k * s.width + c], widen(taps[k][c]), acc);
        narrow(silu<kFma>(acc), o + c - seg.offset);
      }
    }
  }
}

// Copies of the loop for AVX2 + FMA and for AVX-512 (the SiLU's exp and division bound it: wider
// vectors pay), chosen at run time.
template <typename T, int kTaps>
SPLAT_TARGET_AVX2 void conv_rows_avx2(const T* in, const float* weight, const float* bias, const Segment<T>* segments,
                                      int64_t n_segments, const Conv& s, int64_t begin, int64_t end) {
  conv_rows<T, true, kTaps>(in, weight, bias, segments, n_segments, s, begin, end);
}

template <typename T, int kTaps>
SPLAT_TARGET_AVX512 void conv_rows_avx512(const T* in, const float* weight, const float* bias,
                                          const Segment<T>* segments, int64_t n_segments, const Conv& s, int64_t begin,
                                          int64_t end) {
  conv_rows<T, true, kTaps>(in, weight, bias, segments, n_segments, s, begin, end);
}

template <typename T, int kTaps>
void run(const at::Tensor& xbc, const at::Tensor& weight, const at::Tensor& bias, std::vector<at::Tensor>& outs,
         const Conv& s) {
  std::vector<Segment<T>> segments;
  int64_t offset = 0;
  for (at::Tensor& o : outs) {
    segments.push_back({offset, o.size(2), reinterpret_cast<T*>(o.data_ptr())});
    offset += o.size(2);
  }
  const T* in = reinterpret_cast<const T*>(xbc.data_ptr());
  const int64_t rows = xbc.size(0) * s.l, n = static_cast<int64_t>(segments.size());
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / s.width), [&](int64_t begin, int64_t end) {
    if (splat::cpu_has_avx512())
      conv_rows_avx512<T, kTaps>(in, weight.data_ptr<float>(), bias.data_ptr<float>(), segments.data(), n, s, begin,
                                 end);
    else if (splat::cpu_has_avx2())
      conv_rows_avx2<T, kTaps>(in, weight.data_ptr<float>(), bias.data_ptr<float>(), segments.data(), n, s, begin, end);
    else
      conv_rows<T, false, kTaps>(in, weight.data_ptr<float>(), bias.data_ptr<float>(), segments.data(), n, s, begin,
                                 end);
  });
}

// run<T, K> for the K of the weights.
template <typename T>
void run_taps(const at::Tensor& xbc, const at::Tensor& weight, const at::Tensor& bias, std::vector<at::Tensor>& outs,
              const Conv& s) {
  switch (s.taps) {
    case 1: return run<T, 1>(xbc, weight, bias, outs, s);
    case 2: return run<T, 2>(xbc, weight, bias, outs, s);
    case 3: return run<T, 3>(xbc, weight, bias, outs, s);
    default: return run<T, 4>(xbc, weight, bias, outs, s);
  }
}

}  // namespace

// xbc [b, l, D] float32 or bfloat16 with unit channel stride (any row and batch strides: a slice of
// the input projection), weight [K, D] (K <= kMaxTaps) and bias [D] float32 contiguous, splits: the
// widths of the output tensors (summing to D). Returns [b, l, width] contiguous tensors of xbc's dtype, in the
// sequence's order or, with reverse, in the reversed sequence's.
std::vector<at::Tensor> causal_conv1d_silu(const at::Tensor& xbc, const at::Tensor& weight, const at::Tensor& bias,
                                           at::IntArrayRef splits, bool reverse) {
  const Conv s{xbc.size(1), xbc.size(2), weight.size(0), xbc.stride(0), xbc.stride(1), reverse};
  std::vector<at::Tensor> outs;
  for (int64_t width : splits) outs.push_back(at::empty({xbc.size(0), s.l, width}, xbc.options()));
  TORCH_CHECK(s.taps >= 1 && s.taps <= kMaxTaps, "causal_conv1d_silu takes 1 to ", kMaxTaps, " taps, got ", s.taps);
  if (xbc.scalar_type() == at::kBFloat16)
    run_taps<uint16_t>(xbc, weight, bias, outs, s);
  else
    run_taps<float>(xbc, weight, bias, outs, s);
  return outs;
}

}  // namespace network
