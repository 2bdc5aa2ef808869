// The fused FIITED step for the native CPU core: compiled as one unit after cpu_native.cpp and
// cpu_native_rows.cpp (cpu_native.py joins them), so it uses their helpers. Both calls take the
// entries [N] of a batch and read each occurrence's K chunk addresses from the entry table
// addr [E, K] themselves: no [N, K] address tensor, and the update credits the utility of each
// (entry, chunk) in the same pass, so no accumulating index_put over [N, K] either.

namespace {

// out[n, k] = pool[addr[entries[n], k]], zeros where entries[n] < 0 or the chunk is absent.
// Returns -1, -3 - n for the first entry n outside [-1, E), or n*K + k for a bad address.
template <int64_t CC>
int64_t entry_gather_impl(const float* pool, int64_t P, int64_t C_, const int32_t* addr,
                          int64_t E, int64_t K, const int64_t* entries, int64_t N, float* out,
                          int threads) {
  const int64_t C = CC > 0 ? CC : C_;
  const int64_t W = K * C;
  std::atomic<int64_t> bad(INT64_MAX), bad_addr(INT64_MAX);
  auto first_of = [](std::atomic<int64_t>& at, int64_t i) {
    int64_t seen = at.load();
    while (i < seen && !at.compare_exchange_weak(seen, i)) {}
  };
  parallel_for(N, threads, std::max<int64_t>(1, 16384 / std::max<int64_t>(W, 1)),
               [&](int64_t b, int64_t e) {
    for (int64_t n = b; n < e; ++n) {
      if (n + 2 * kAhead < e) {  // random entries: their addresses, then their chunks, early
        const int64_t far = entries[n + 2 * kAhead];
        if (far >= 0 && far < E) __builtin_prefetch(addr + far * K, 0);
      }
      if (n + kAhead < e) {
        const int64_t near = entries[n + kAhead];
        if (near >= 0 && near < E)
          for (int64_t k = 0; k < K; ++k) {
            const int64_t r = addr[near * K + k];
            if (r >= 0 && r < P) prefetch_row(pool + r * C, C, 0);
          }
      }
      const int64_t ent = entries[n];
      float* dst = out + n * W;
      if (ent < 0 || ent >= E) {
        std::memset(dst, 0, sizeof(float) * W);
        if (ent != -1) first_of(bad, n);
        continue;
      }
      for (int64_t k = 0; k < K; ++k) {
        const int64_t r = addr[ent * K + k];
        if (r >= 0 && r < P) {
          std::memcpy(dst + k * C, pool + r * C, sizeof(float) * C);
          continue;
        }
        std::memset(dst + k * C, 0, sizeof(float) * C);
        if (r >= P) first_of(bad_addr, n * K + k);
      }
    }
  });
  if (bad.load() != INT64_MAX) return -3 - bad.load();
  return bad_addr.load() == INT64_MAX ? -1 : bad_addr.load();
}

// The fused update, grouped by entry: a stable radix sort of (entry, occurrence) pairs; each
// thread owns whole entries, sums each chunk's gradient over the entry's occurrences in
// occurrence order (the unfused path's order per pool slot, as a slot has one owner), credits
// util[e, k] per occurrence in that order (norm * uscale, or uscale for freq), then applies the
// optimizer to the present chunks: per slot (SGD, row-wise Adagrad per chunk: update_impl's
// arithmetic) or with one accumulator per entry (row_state: row_update_impl's). Occurrences
// without an entry change nothing. Returns -1, or -2 when too large for 32-bit packing.
template <int64_t CC>
int64_t entry_update_impl(float* pool, int64_t C_, float* state, const int32_t* addr,
                          int64_t E, int64_t K, const int64_t* entries, int64_t N,
                          const float* grad, int adagrad, int row_state, float lr, float eps,
                          float* util, float uscale, int freq, int threads) {
  const int64_t C = CC > 0 ? CC : C_;
  const int64_t W = K * C;
  if (N >= (int64_t(1) << 32) || E > (int64_t(1) << 32)) return -2;
  std::vector<uint64_t> keyed;
  collect(entries, N, E, threads, keyed);
  sort_by_key(keyed, E, threads);
  const int64_t Np = (int64_t)keyed.size();
  const uint64_t* s = keyed.data();
  const float nlr = -lr;
  int64_t grain = std::max<int64_t>(16, 65536 / std::max<int64_t>(W, 1));
  parallel_for(Np, threads, grain, [&](int64_t b, int64_t e) {
    std::vector<float> acc(W);
    while (b < e && b > 0 && (s[b] >> 32) == (s[b - 1] >> 32)) ++b;
    int64_t j = b;
    while (j < e) {
      const int64_t ent = int64_t(s[j] >> 32);
      std::fill(acc.begin(), acc.end(), 0.0f);
      float* u = util ? util + ent * K : nullptr;
      for (; j < Np && int64_t(s[j] >> 32) == ent; ++j) {
        if (j + kAhead < Np) {
          const uint64_t next = s[j + kAhead];
          prefetch_row(grad + int64_t(next & 0xffffffffu) * W, W, 0);
          __builtin_prefetch(addr + int64_t(next >> 32) * K, 0);
          if (util) __builtin_prefetch(util + int64_t(next >> 32) * K, 1);
        }
        const float* g = grad + int64_t(s[j] & 0xffffffffu) * W;
        for (int64_t k = 0; k < K; ++k) {
          const float* gk = g + k * C;
          float* a = acc.data() + k * C;
          for (int64_t c = 0; c < C; ++c) a[c] += gk[c];
          if (u) u[k] += freq ? uscale : std::sqrt(sum_squares(gk, C)) * uscale;
        }
      }
      const int32_t* rep = addr + ent * K;
      if (row_state) {
        int64_t present = 0;
        float sq = 0.0f;
        for (int64_t k = 0; k < K; ++k)
          if (rep[k] >= 0) { ++present; sq += sum_squares(acc.data() + k * C, C); }
        if (present == 0) continue;
        const float st = state[ent] + sq / float(present * C);
        state[ent] = st;
        const float mult = lr / (std::sqrt(st) + eps);
        for (int64_t k = 0; k < K; ++k) {
          if (rep[k] < 0) continue;
          float* w = pool + int64_t(rep[k]) * C;
          const float* a = acc.data() + k * C;
          for (int64_t c = 0; c < C; ++c) w[c] = w[c] - a[c] * mult;
        }
        continue;
      }
      for (int64_t k = 0; k < K; ++k) {
        if (rep[k] < 0) continue;
        const int64_t slot = rep[k];
        float* w = pool + slot * C;
        const float* a = acc.data() + k * C;
        if (adagrad) {
          float st = state[slot] + sum_squares(a, C) / float(C);
          state[slot] = st;
          const float mult = lr / (std::sqrt(st) + eps);
          for (int64_t c = 0; c < C; ++c) w[c] = w[c] - a[c] * mult;
        } else {
          for (int64_t c = 0; c < C; ++c) w[c] = w[c] + nlr * a[c];
        }
      }
    }
  });
  return -1;
}

// keyed.py's keyed_hash (murmur3 fmix32 rounds on the low 32 bits), bit for bit.
inline uint64_t mix32(uint64_t x) {
  const uint64_t M = 0xFFFFFFFFull;
  x ^= x >> 16;
  x = (x * 0x85EBCA6Bull) & M;
  x ^= x >> 13;
  x = (x * 0xC2B2AE35ull) & M;
  return x ^ (x >> 16);
}

// keyed_hash(seed, table_key, id) = keyed_tail(keyed_head(seed, table_key), id).
inline uint64_t keyed_head(uint64_t seed, uint64_t table_key) {
  return mix32((table_key * 0x9E3779B1ull + (seed & 0xFFFFFFFFull)) & 0xFFFFFFFFull);
}

inline uint64_t keyed_tail(uint64_t head, uint64_t id) {
  const uint64_t h = mix32(head ^ (id & 0xFFFFFFFFull));
  return mix32(h ^ ((id >> 32) & 0xFFFFFFFFull) ^ 0x27D4EB2Full);
}

}  // namespace

extern "C" {

// The hashed index's count-min sketch, one access per occurrence: for sketch row d,
// sketch[d, base[t] + keyed_hash(d + 1, tkey[t], id) % width[t]] += 1, t = tables[i],
// id = rows[i] - start[t]; tables of width 0 are not counted. One thread: the increments are
// all 1, so their order does not matter, and no cell is written by two threads.
void fiited_sketch_count(float* sketch, int64_t D, int64_t S, const int64_t* rows,
                         const int64_t* tables, int64_t N, int64_t F, const int64_t* start,
                         const int64_t* width, const int64_t* base, const int64_t* tkey) {
  std::vector<uint64_t> head(F * D);  // the (seed, table) half of each hash, once per table
  for (int64_t t = 0; t < F; ++t)
    for (int64_t d = 0; d < D; ++d) head[t * D + d] = keyed_head(uint64_t(d + 1), tkey[t]);
  for (int64_t i = 0; i < N; ++i) {
    const int64_t t = tables[i], w = width[t];
    if (w <= 0) continue;
    const uint64_t id = uint64_t(rows[i] - start[t]);
    for (int64_t d = 0; d < D; ++d)
      sketch[d * S + base[t] + int64_t(keyed_tail(head[t * D + d], id) % uint64_t(w))] += 1.0f;
  }
}

int64_t fiited_fused_gather(const float* pool, int64_t P, int64_t C, const int32_t* addr,
                            int64_t E, int64_t K, const int64_t* entries, int64_t N, float* out,
                            int threads) {
  return with_width(C, [&](auto cc) {
    constexpr int64_t CC = decltype(cc)::value;
    return entry_gather_impl<CC>(pool, P, C, addr, E, K, entries, N, out, threads);
  });
}

// state: per pool slot (row_state 0) or per entry (row_state 1); util [E, K] or null.
int64_t fiited_fused_update(float* pool, int64_t C, float* state, const int32_t* addr,
                            int64_t E, int64_t K, const int64_t* entries, int64_t N,
                            const float* grad, int adagrad, int row_state, float lr, float eps,
                            float* util, float uscale, int freq, int threads) {
  return with_width(C, [&](auto cc) {
    constexpr int64_t CC = decltype(cc)::value;
    return entry_update_impl<CC>(pool, C, state, addr, E, K, entries, N, grad, adagrad,
                                 row_state, lr, eps, util, uscale, freq, threads);
  });
}
}
