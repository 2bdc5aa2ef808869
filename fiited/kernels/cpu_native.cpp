// The native CPU core of fiited/kernels (see cpu_native.py, which builds and loads it).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

// Split [0, n) into `t` chunks and run fn(chunk, begin, end) on one thread each.
template <typename F>
void for_chunks(int64_t t, int64_t n, const F& fn) {
  if (t <= 1) { if (n > 0) fn(int64_t(0), int64_t(0), n); return; }
  int64_t step = (n + t - 1) / t;
  std::vector<std::thread> workers;
  for (int64_t i = 1; i < t; ++i) {
    int64_t b = std::min(n, i * step), e = std::min(n, b + step);
    workers.emplace_back([&fn, i, b, e] { fn(i, b, e); });
  }
  fn(int64_t(0), int64_t(0), std::min(n, step));
  for (auto& w : workers) w.join();
}

// How many threads for n items when each should get at least `grain`.
inline int64_t team(int64_t n, int threads, int64_t grain) {
  return std::max<int64_t>(1, std::min<int64_t>(threads, n / std::max<int64_t>(grain, 1)));
}

// Run fn(begin, end) over [0, n) on up to `threads` threads, at least `grain` items each.
template <typename F>
void parallel_for(int64_t n, int threads, int64_t grain, const F& fn) {
  for_chunks(team(n, threads, grain), n, [&fn](int64_t, int64_t b, int64_t e) {
    if (b < e) fn(b, e);
  });
}

constexpr int64_t kAhead = 12;  // occurrences to prefetch ahead on random row reads

inline void prefetch_row(const float* row, int64_t c, int write) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t o = 0; o < c * int64_t(sizeof(float)); o += 64)
    write ? __builtin_prefetch(p + o, 1) : __builtin_prefetch(p + o, 0);
}

inline float sum_squares(const float* g, int64_t c) {
  float p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= c; j += 8)
    for (int l = 0; l < 8; ++l) p[l] += g[j + l] * g[j + l];
  for (; j < c; ++j) p[0] += g[j] * g[j];
  return ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
}

// CC > 0: the chunk width as a compile-time constant (inlined copies, unrolled loops for the
// small widths FIITED's chunks have); CC == 0: any width, read from C_.
template <typename R, int64_t CC>
int64_t gather_impl(const float* pool, int64_t P, int64_t C_, const R* rows, int64_t M,
                    float* out, int threads) {
  const int64_t C = CC > 0 ? CC : C_;
  std::atomic<int64_t> bad(INT64_MAX);
  parallel_for(M, threads, std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)),
               [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      if (i + kAhead < e) {
        int64_t ahead = (int64_t)rows[i + kAhead];
        if (ahead >= 0 && ahead < P) prefetch_row(pool + ahead * C, C, 0);
      }
      int64_t r = (int64_t)rows[i];
      float* dst = out + i * C;
      if (r >= 0 && r < P) {
        std::memcpy(dst, pool + r * C, sizeof(float) * C);
        continue;
      }
      std::memset(dst, 0, sizeof(float) * C);
      if (r >= P) {
        int64_t seen = bad.load();
        while (i < seen && !bad.compare_exchange_weak(seen, i)) {}
      }
    }
  });
  int64_t first = bad.load();
  return first == INT64_MAX ? -1 : first;
}

// Pooled gather: out[b, k] = sum over bag b's occurrences n, in order, of w[n] * pool[rows[n, k]]
// (absent chunks skipped), divided by the bag length when `mean`; empty bags give zeros.
template <typename R, typename O, int64_t CC>
int64_t bag_gather_impl(const float* pool, int64_t P, int64_t C_, const R* rows, int64_t K,
                        const O* offsets, int64_t B, const float* w, int mean, float* out,
                        int threads) {
  const int64_t C = CC > 0 ? CC : C_;
  const int64_t W = K * C;
  std::atomic<int64_t> bad(INT64_MAX);
  const int64_t N = B > 0 ? (int64_t)offsets[B] : 0;
  const int64_t per_bag = std::max<int64_t>(1, N / std::max<int64_t>(B, 1)) * W;
  parallel_for(B, threads, std::max<int64_t>(1, 16384 / per_bag), [&](int64_t b0, int64_t e0) {
    for (int64_t b = b0; b < e0; ++b) {
      float* dst = out + b * W;
      std::memset(dst, 0, sizeof(float) * W);
      const int64_t lo = (int64_t)offsets[b], hi = (int64_t)offsets[b + 1];
      for (int64_t n = lo; n < hi; ++n) {
        const float f = w ? w[n] : 1.0f;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t i = n * K + k;
          if (i + kAhead < hi * K) {
            int64_t ahead = (int64_t)rows[i + kAhead];
            if (ahead >= 0 && ahead < P) prefetch_row(pool + ahead * C, C, 0);
          }
          const int64_t r = (int64_t)rows[i];
          if (r < 0) continue;
          if (r >= P) {
            int64_t seen = bad.load();
            while (i < seen && !bad.compare_exchange_weak(seen, i)) {}
            continue;
          }
          const float* src = pool + r * C;
          float* d = dst + k * C;
          if (w) for (int64_t c = 0; c < C; ++c) d[c] += src[c] * f;
          else for (int64_t c = 0; c < C; ++c) d[c] += src[c];
        }
      }
      if (mean && hi > lo) {
        const float len = float(hi - lo);
        for (int64_t c = 0; c < W; ++c) dst[c] = dst[c] / len;
      }
    }
  });
  int64_t first = bad.load();
  return first == INT64_MAX ? -1 : first;
}

// Stable LSD radix sort of packed (key << 32 | occurrence) by the key's low `bits` bits.
// Each pass: per-chunk digit counts, offsets in (digit, chunk) order, per-chunk scatter.
void radix_sort(std::vector<uint64_t>& a, std::vector<uint64_t>& tmp, int bits, int threads) {
  const int64_t n = (int64_t)a.size();
  if (bits <= 0 || n < 2) return;
  const int passes = (bits + 10) / 11;
  const int width = (bits + passes - 1) / passes;
  const int64_t buckets = int64_t(1) << width;
  const uint64_t mask = uint64_t(buckets - 1);
  const int64_t t = team(n, threads, 65536);
  std::vector<int64_t> count(t * buckets);
  tmp.resize(n);
  for (int p = 0; p < passes; ++p) {
    const int shift = 32 + p * width;
    const uint64_t* src = a.data();
    uint64_t* dst = tmp.data();
    std::fill(count.begin(), count.end(), 0);
    for_chunks(t, n, [&](int64_t id, int64_t b, int64_t e) {
      int64_t* c = count.data() + id * buckets;
      for (int64_t i = b; i < e; ++i) ++c[(src[i] >> shift) & mask];
    });
    int64_t sum = 0;
    for (int64_t d = 0; d < buckets; ++d)
      for (int64_t id = 0; id < t; ++id) {
        int64_t x = count[id * buckets + d];
        count[id * buckets + d] = sum;
        sum += x;
      }
    for_chunks(t, n, [&](int64_t id, int64_t b, int64_t e) {
      int64_t* c = count.data() + id * buckets;
      for (int64_t i = b; i < e; ++i) dst[c[(src[i] >> shift) & mask]++] = src[i];
    });
    a.swap(tmp);
  }
}

// Sort (key << 32 | occurrence) pairs by key, for keys below `bound`: only the key's bits.
void sort_by_key(std::vector<uint64_t>& keyed, int64_t bound, int threads) {
  int bits = 0;
  while (bits < 32 && (int64_t(1) << bits) < bound) ++bits;
  std::vector<uint64_t> tmp;
  radix_sort(keyed, tmp, bits, threads);
}

// The present (row, occurrence) pairs in occurrence order; -1, or the first out-of-range index.
template <typename R>
int64_t collect(const R* rows, int64_t M, int64_t P, int threads, std::vector<uint64_t>& out) {
  const int64_t t = team(M, threads, 65536);
  std::vector<int64_t> present(t + 1, 0), bad(t, INT64_MAX);
  for_chunks(t, M, [&](int64_t id, int64_t b, int64_t e) {
    int64_t n = 0;
    for (int64_t i = b; i < e; ++i) {
      int64_t r = (int64_t)rows[i];
      if (r >= P && bad[id] == INT64_MAX) bad[id] = i;
      n += r >= 0;
    }
    present[id + 1] = n;
  });
  int64_t first = *std::min_element(bad.begin(), bad.end());
  if (first != INT64_MAX) return first;
  for (int64_t id = 0; id < t; ++id) present[id + 1] += present[id];
  out.resize(present[t]);
  for_chunks(t, M, [&](int64_t id, int64_t b, int64_t e) {
    uint64_t* dst = out.data() + present[id];
    for (int64_t i = b; i < e; ++i) {
      int64_t r = (int64_t)rows[i];
      if (r >= 0) *dst++ = (uint64_t(r) << 32) | uint64_t(i);
    }
  });
  return -1;
}

// One occurrence's gradient slice. One-hot (BAG false): grad[occ], factor 1. Bags: the slice
// of its bag's pooled gradient, grad[bag[n], k] for occ = n*K + k, times scale[n] (or 1).
template <bool BAG>
struct Shares {
  const float* grad; int64_t C; int64_t K; const int64_t* bag; const float* scale;
  inline const float* at(int64_t occ) const {
    if (!BAG) return grad + occ * C;
    const int64_t n = occ / K;
    return grad + (bag[n] * K + (occ - n * K)) * C;
  }
  inline float factor(int64_t occ) const {
    return BAG && scale ? scale[occ / K] : 1.0f;
  }
};

template <typename R, int64_t CC, bool BAG = false>
int64_t update_impl(float* pool, int64_t P, int64_t C_, float* state, const R* rows, int64_t M,
                    const float* grad, float* norms, int adagrad, float lr, float eps,
                    int threads, int64_t K = 1, const int64_t* bag = nullptr,
                    const float* scale = nullptr) {
  const int64_t C = CC > 0 ? CC : C_;
  const Shares<BAG> sh{grad, C, K, bag, scale};
  if (M >= (int64_t(1) << 32) || P > (int64_t(1) << 32)) return -2;
  std::vector<uint64_t> keyed;
  int64_t bad = collect(rows, M, P, threads, keyed);
  if (bad >= 0) return bad;
  sort_by_key(keyed, P, threads);
  const int64_t Mp = (int64_t)keyed.size();  // present occurrences
  const uint64_t* s = keyed.data();
  const float nlr = -lr;
  int64_t grain = std::max<int64_t>(64, 65536 / std::max<int64_t>(C, 1));
  parallel_for(Mp, threads, grain, [&](int64_t b, int64_t e) {
    std::vector<float> acc(C);
    // A thread owns the segments that start in [b, e).
    while (b < e && b > 0 && (s[b] >> 32) == (s[b - 1] >> 32)) ++b;
    int64_t j = b;
    while (j < e) {
      const uint64_t key = s[j] >> 32;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (; j < Mp && (s[j] >> 32) == key; ++j) {
        if (j + kAhead < Mp) {  // random rows: ask for the next ones early
          const uint64_t next = s[j + kAhead];
          prefetch_row(sh.at(int64_t(next & 0xffffffffu)), C, 0);
          prefetch_row(pool + int64_t(next >> 32) * C, C, 1);
        }
        const int64_t occ = int64_t(s[j] & 0xffffffffu);
        const float* g = sh.at(occ);
        if (BAG && scale) {
          const float f = sh.factor(occ);
          for (int64_t c = 0; c < C; ++c) acc[c] += g[c] * f;
          norms[occ] = std::fabs(f) * std::sqrt(sum_squares(g, C));
        } else {
          for (int64_t c = 0; c < C; ++c) acc[c] += g[c];
          norms[occ] = std::sqrt(sum_squares(g, C));
        }
      }
      float* w = pool + int64_t(key) * C;
      if (adagrad) {
        float st = state[key] + sum_squares(acc.data(), C) / float(C);
        state[key] = st;
        const float mult = lr / (std::sqrt(st) + eps);
        for (int64_t c = 0; c < C; ++c) w[c] = w[c] - acc[c] * mult;
      } else {
        for (int64_t c = 0; c < C; ++c) w[c] = w[c] + nlr * acc[c];
      }
    }
  });
  if (Mp < M) {  // absent chunks still get their gradient norm
    parallel_for(M, threads, 16384, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i)
        if ((int64_t)rows[i] < 0)
          norms[i] = std::fabs(sh.factor(i)) * std::sqrt(sum_squares(sh.at(i), C));
    });
  }
  return -1;
}

// Linear-probing lookup in a hashed index: out[i] = the slot whose key is rows[i], or -1 (an
// empty slot ends the probe, and so does max_probe). home = (row * mult) mod E with int64
// wrap-around and a non-negative remainder, as torch computes it.
template <typename K>
void hash_find_impl(const K* keys, int64_t E, const int64_t* rows, int64_t n, int64_t mult,
                    int64_t max_probe, int64_t* out, int threads) {
  parallel_for(n, threads, 8192, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t r = rows[i];
      int64_t h = int64_t(uint64_t(r) * uint64_t(mult)) % E;
      if (h < 0) h += E;
      int64_t found = -1;
      for (int64_t step = 0; step <= max_probe; ++step) {
        int64_t slot = h + step;
        if (slot >= E) slot -= E;
        const int64_t k = (int64_t)keys[slot];
        if (k == r) { found = slot; break; }
        if (k < 0) break;
      }
      out[i] = found;
    }
  });
}

// fn(width) with the width as a compile-time constant for the narrow chunks of FIITED at small
// D (4 and 8 floats: per-chunk call overhead dominates there; constant widths measured 1.3-1.4x
// faster at C=4), else 0: wider rows are copied by libc's memcpy, which was as fast or faster.
template <typename F>
int64_t with_width(int64_t C, const F& fn) {
  switch (C) {
    case 4: return fn(std::integral_constant<int64_t, 4>());
    case 8: return fn(std::integral_constant<int64_t, 8>());
    default: return fn(std::integral_constant<int64_t, 0>());
  }
}

}  // namespace

extern "C" {

int64_t fiited_gather(const float* pool, int64_t P, int64_t C, const void* rows, int rows64,
                      int64_t M, float* out, int threads) {
  return with_width(C, [&](auto cc) {
    constexpr int64_t CC = decltype(cc)::value;
    return rows64 ? gather_impl<int64_t, CC>(pool, P, C, (const int64_t*)rows, M, out, threads)
                  : gather_impl<int32_t, CC>(pool, P, C, (const int32_t*)rows, M, out, threads);
  });
}

int64_t fiited_update(float* pool, int64_t P, int64_t C, float* state, const void* rows,
                      int rows64, int64_t M, const float* grad, float* norms, int adagrad,
                      float lr, float eps, int threads) {
  return with_width(C, [&](auto cc) {
    constexpr int64_t CC = decltype(cc)::value;
    return rows64 ? update_impl<int64_t, CC>(pool, P, C, state, (const int64_t*)rows, M, grad,
                                             norms, adagrad, lr, eps, threads)
                  : update_impl<int32_t, CC>(pool, P, C, state, (const int32_t*)rows, M, grad,
                                             norms, adagrad, lr, eps, threads);
  });
}

int64_t fiited_bag_gather(const float* pool, int64_t P, int64_t C, const void* rows, int rows64,
                          int64_t K, const void* offsets, int offsets64, int64_t B,
                          const float* weights, int mean, float* out, int threads) {
  return with_width(C, [&](auto cc) {
    constexpr int64_t CC = decltype(cc)::value;
    if (rows64 && offsets64)
      return bag_gather_impl<int64_t, int64_t, CC>(pool, P, C, (const int64_t*)rows, K,
          (const int64_t*)offsets, B, weights, mean, out, threads);
    if (rows64)
      return bag_gather_impl<int64_t, int32_t, CC>(pool, P, C, (const int64_t*)rows, K,
          (const int32_t*)offsets, B, weights, mean, out, threads);
    if (offsets64)
      return bag_gather_impl<int32_t, int64_t, CC>(pool, P, C, (const int32_t*)rows, K,
          (const int64_t*)offsets, B, weights, mean, out, threads);
    return bag_gather_impl<int32_t, int32_t, CC>(pool, P, C, (const int32_t*)rows, K,
        (const int32_t*)offsets, B, weights, mean, out, threads);
  });
}

// The bag update: occurrence n's share is grad[bag[n]] * scale[n] (scale may be null: 1).
int64_t fiited_bag_update(float* pool, int64_t P, int64_t C, float* state, const void* rows,
                          int rows64, int64_t N, int64_t K, const int64_t* bag,
                          const float* scale, const float* grad, float* norms, int adagrad,
                          float lr, float eps, int threads) {
  return with_width(C, [&](auto cc) {
    constexpr int64_t CC = decltype(cc)::value;
    return rows64 ? update_impl<int64_t, CC, true>(pool, P, C, state, (const int64_t*)rows,
                                                   N * K, grad, norms, adagrad, lr, eps,
                                                   threads, K, bag, scale)
                  : update_impl<int32_t, CC, true>(pool, P, C, state, (const int32_t*)rows,
                                                   N * K, grad, norms, adagrad, lr, eps,
                                                   threads, K, bag, scale);
  });
}

void fiited_hash_find(const void* keys, int keys64, int64_t E, const int64_t* rows, int64_t n,
                      int64_t mult, int64_t max_probe, int64_t* out, int threads) {
  if (keys64) hash_find_impl((const int64_t*)keys, E, rows, n, mult, max_probe, out, threads);
  else hash_find_impl((const int32_t*)keys, E, rows, n, mult, max_probe, out, threads);
}
}
