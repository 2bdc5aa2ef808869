// Row-wise Adagrad per logical row for the native CPU core: compiled as one unit after
// cpu_native.cpp (cpu_native.py joins the two), so it uses that file's helpers.

namespace {

// Row-wise Adagrad with one accumulator per logical row (reference.py's row_update): occurrences
// n (with state row srows[n] >= 0) are sorted by state row; each thread owns whole state rows,
// sums their K*C gradient floats in occurrence order, grows the accumulator by the mean of g^2
// over the present chunks (those of the row's first occurrence, rows[n*K + k] >= 0) and applies
// one step to all of them. Norms [N, K] as in update_impl.
template <typename R, int64_t CC, bool BAG>
int64_t row_update_impl(float* pool, int64_t P, int64_t C_, float* state, int64_t S,
                        const R* rows, int64_t N, int64_t K, const int64_t* srows,
                        const float* grad, float* norms, float lr, float eps, int threads,
                        const int64_t* bag, const float* scale) {
  const int64_t C = CC > 0 ? CC : C_;
  const int64_t W = K * C;
  const Shares<BAG> sh{grad, C, K, bag, scale};
  if (N >= (int64_t(1) << 32) || S > (int64_t(1) << 32)) return -2;
  std::atomic<int64_t> bad(INT64_MAX);
  parallel_for(N * K, threads, 65536, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      if ((int64_t)rows[i] >= P) {
        int64_t seen = bad.load();
        while (i < seen && !bad.compare_exchange_weak(seen, i)) {}
        return;
      }
  });
  if (bad.load() != INT64_MAX) return bad.load();
  std::vector<uint64_t> keyed;
  collect(srows, N, S, threads, keyed);
  sort_by_key(keyed, S, threads);
  const int64_t Np = (int64_t)keyed.size();
  const uint64_t* s = keyed.data();
  int64_t grain = std::max<int64_t>(16, 65536 / std::max<int64_t>(W, 1));
  parallel_for(Np, threads, grain, [&](int64_t b, int64_t e) {
    std::vector<float> acc(W);
    while (b < e && b > 0 && (s[b] >> 32) == (s[b - 1] >> 32)) ++b;
    int64_t j = b;
    while (j < e) {
      const uint64_t key = s[j] >> 32;
      const int64_t first = int64_t(s[j] & 0xffffffffu);
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (; j < Np && (s[j] >> 32) == key; ++j) {
        const int64_t n = int64_t(s[j] & 0xffffffffu);
        for (int64_t k = 0; k < K; ++k) {
          const int64_t occ = n * K + k;
          const float* g = sh.at(occ);
          float* a = acc.data() + k * C;
          if (BAG && scale) {
            const float f = sh.factor(occ);
            for (int64_t c = 0; c < C; ++c) a[c] += g[c] * f;
            norms[occ] = std::fabs(f) * std::sqrt(sum_squares(g, C));
          } else {
            for (int64_t c = 0; c < C; ++c) a[c] += g[c];
            norms[occ] = std::sqrt(sum_squares(g, C));
          }
        }
      }
      const R* rep = rows + first * K;
      int64_t present = 0;
      float sq = 0.0f;
      for (int64_t k = 0; k < K; ++k)
        if ((int64_t)rep[k] >= 0) { ++present; sq += sum_squares(acc.data() + k * C, C); }
      if (present == 0) continue;
      const float st = state[key] + sq / float(present * C);
      state[key] = st;
      const float mult = lr / (std::sqrt(st) + eps);
      for (int64_t k = 0; k < K; ++k) {
        const int64_t r = (int64_t)rep[k];
        if (r < 0) continue;
        float* w = pool + r * C;
        const float* a = acc.data() + k * C;
        for (int64_t c = 0; c < C; ++c) w[c] = w[c] - a[c] * mult;
      }
    }
  });
  if (Np < N) {  // occurrences without a state row: no update, still their norms
    parallel_for(N, threads, 4096, [&](int64_t b, int64_t e) {
      for (int64_t n = b; n < e; ++n)
        if (srows[n] < 0)
          for (int64_t k = 0; k < K; ++k) {
            const int64_t occ = n * K + k;
            norms[occ] = std::fabs(sh.factor(occ)) * std::sqrt(sum_squares(sh.at(occ), C));
          }
    });
  }
  return -1;
}

}  // namespace

extern "C" {

// Row-wise Adagrad per logical row (one-hot, or bags when `is_bag`: occurrence n's share is
// grad[bag[n]] * scale[n]); srows [N] int64 in [-1, S), range-checked by the caller.
int64_t fiited_row_update(float* pool, int64_t P, int64_t C, float* state, int64_t S,
                          const void* rows, int rows64, int64_t N, int64_t K,
                          const int64_t* srows, int is_bag, const int64_t* bag,
                          const float* scale, const float* grad, float* norms, float lr,
                          float eps, int threads) {
  return with_width(C, [&](auto cc) {
    constexpr int64_t CC = decltype(cc)::value;
    if (is_bag)
      return rows64 ? row_update_impl<int64_t, CC, true>(pool, P, C, state, S,
                          (const int64_t*)rows, N, K, srows, grad, norms, lr, eps, threads,
                          bag, scale)
                    : row_update_impl<int32_t, CC, true>(pool, P, C, state, S,
                          (const int32_t*)rows, N, K, srows, grad, norms, lr, eps, threads,
                          bag, scale);
    return rows64 ? row_update_impl<int64_t, CC, false>(pool, P, C, state, S,
                        (const int64_t*)rows, N, K, srows, grad, norms, lr, eps, threads,
                        nullptr, nullptr)
                  : row_update_impl<int32_t, CC, false>(pool, P, C, state, S,
                        (const int32_t*)rows, N, K, srows, grad, norms, lr, eps, threads,
                        nullptr, nullptr);
  });
}
}
