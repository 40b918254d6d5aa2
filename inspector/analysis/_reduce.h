/* The float32 / float64 loops of _kernels.c (reduce, select, row_signs), written once and
 * included once per type.
 *
 * Before including, _kernels.c defines:
 *   T         the element type (float, double)
 *   U         the unsigned integer of the same width (its bits)
 *   BITS      the width (32, 64)
 *   EXP_MASK  the exponent bits (all set: Inf or NaN)
 *   SHIFT     the low mantissa bits a bucket key drops (12 for float32, 44 for float64)
 *   FN(name)  the name with the type's suffix (name_f32, name_f64)
 *   NEXT      the type's nextafter (nextafterf, nextafter)
 *   TOP       the type's largest finite value (FLT_MAX, DBL_MAX)
 * This file undefines them at its end. Each function is plain code a debugger steps through.
 *
 * A bucket key is magnitude-major: (leading magnitude bits << 1) | sign, so that the values of
 * a block, whatever their signs, fall into one narrow range of keys.
 */

static inline Py_ssize_t
FN(key)(U b)
{
    return (Py_ssize_t)((((U)(b << 1) >> (SHIFT + 1)) << 1) | (b >> (BITS - 1)));
}

/* Sum and |x| sum in LANES float64 accumulators (the vectoriser keeps them in registers). */
CLONES NOINLINE static void
FN(sums)(const T *x, Py_ssize_t m, double *sum, double *abs_sum)
{
    double sl[LANES] = {0}, al[LANES] = {0}, s = 0, a = 0;
    Py_ssize_t whole = m / LANES * LANES;
    for (Py_ssize_t i = 0; i < whole; i += LANES)
        for (int j = 0; j < LANES; j++) {
            double d = x[i + j];
            sl[j] += d;
            al[j] += fabs(d);
        }
    for (Py_ssize_t i = whole; i < m; i++) {
        s += x[i];
        a += fabs((double)x[i]);
    }
    for (int j = 0; j < LANES; j++) {
        s += sl[j];
        a += al[j];
    }
    *sum = s;
    *abs_sum = a;
}

/* Only called on blocks of finite values, where finite-math is exact; either zero may be
 * reported for a block whose extreme is 0.0 and -0.0 at once (they compare equal). The range of
 * bucket keys comes from the same loop, so that the counting loop need not track it. */
CLONES NOINLINE FINITE static void
FN(extremes)(const T *x, Py_ssize_t m, T *lo_out, T *hi_out, Summary *s)
{
    const U *u = (const U *)x;
    T lo = INFINITY, hi = -INFINITY;
    U klo = ~(U)0, khi = 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        T v = x[i];
        U k = (U)FN(key)(u[i]);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        klo = k < klo ? k : klo;
        khi = k > khi ? k : khi;
    }
    *lo_out = lo;
    *hi_out = hi;
    if (m) {
        s->klo = (Py_ssize_t)klo < s->klo ? (Py_ssize_t)klo : s->klo;
        s->khi = (Py_ssize_t)khi > s->khi ? (Py_ssize_t)khi : s->khi;
    }
}

/* Bucket counts of a block of finite values (FN(extremes) finds the range of keys), and its M2 about
 * `mean`: the keys of KEYS values at a time computed into a small buffer, with the squares summed in
 * LANES float64 accumulators in the same loop (one the compiler vectorises), then counted eight at a
 * time, so that the increments overlap. The squares are added in the order of a plain lane loop over
 * the block: value i to lane i % LANES, the last m % LANES values to one more sum, the lanes last. */
CLONES NOINLINE static double
FN(count)(const T *x, Py_ssize_t m, double mean, int64_t *counts)
{
    const U *u = (const U *)x;
    uint32_t kb[KEYS];
    double ql[LANES] = {0}, m2 = 0;
    for (Py_ssize_t s = 0; s < m; s += KEYS) {
        Py_ssize_t e = m - s < KEYS ? m - s : KEYS, i = 0, j = 0;
        for (; j + LANES <= e; j += LANES) /* (KEYS is a multiple of LANES: only the last piece has a tail) */
            for (int l = 0; l < LANES; l++) {
                kb[j + l] = (uint32_t)FN(key)(u[s + j + l]);
                double d = (double)x[s + j + l] - mean;
                ql[l] += d * d;
            }
        for (; j < e; j++) {
            kb[j] = (uint32_t)FN(key)(u[s + j]);
            double d = (double)x[s + j] - mean;
            m2 += d * d;
        }
        for (; i + 8 <= e; i += 8) {
            counts[kb[i]]++;
            counts[kb[i + 1]]++;
            counts[kb[i + 2]]++;
            counts[kb[i + 3]]++;
            counts[kb[i + 4]]++;
            counts[kb[i + 5]]++;
            counts[kb[i + 6]]++;
            counts[kb[i + 7]]++;
        }
        for (; i < e; i++)
            counts[kb[i]]++;
    }
    for (int l = 0; l < LANES; l++)
        m2 += ql[l];
    return m2;
}

/* A block holding NaN or Inf (or whose float64 sum overflows): every value checked. */
static void
FN(careful)(const T *xb, Py_ssize_t m, int64_t *counts, Summary *s)
{
    const U *ub = (const U *)xb;
    const U sign = (U)1 << (BITS - 1);
    double sum = 0, abs_sum = 0, m2 = 0;
    T lo = INFINITY, hi = -INFINITY;
    int64_t finite = 0, zero = 0, neg_zero = 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        U b = ub[i];
        if ((b & EXP_MASK) == EXP_MASK) {
            if (b & ~((U)EXP_MASK | sign))
                s->nan++;
            else
                s->inf++;
            continue;
        }
        T v = xb[i];
        finite++;
        sum += v;
        abs_sum += fabs((double)v);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        zero += (U)(b << 1) == 0;
        neg_zero += b == sign;
        Py_ssize_t key = FN(key)(b);
        counts[key]++;
        s->klo = key < s->klo ? key : s->klo;
        s->khi = key > s->khi ? key : s->khi;
    }
    if (finite == 0)
        return;
    double mean = sum / (double)finite;
    for (Py_ssize_t i = 0; i < m; i++)
        if ((ub[i] & EXP_MASK) != EXP_MASK) {
            double d = (double)xb[i] - mean;
            m2 += d * d;
        }
    merge_moments(s, finite, mean, m2, abs_sum);
    s->min = lo < s->min ? lo : s->min;
    s->max = hi > s->max ? hi : s->max;
    s->zero += zero;
    s->neg_zero += neg_zero;
}

/* Block by block, each step a simple loop over the block while it sits in cache:
 *   1. sum and |x| sum; a sum that is not finite sends the block to the careful path;
 *   2. min and max, of values now known to be finite, and the range of bucket keys; 3. bucket
 *      counts and M2 about the block's mean, in one loop; 4. zeros and -0.0, counted only when a value
 *      fell into bucket 0 or 1 (zero and the tiniest subnormals). */
static void
FN(reduce)(const T *x, Py_ssize_t n, Py_ssize_t block, int64_t *counts, Summary *s)
{
    const U sign = (U)1 << (BITS - 1);
    for (Py_ssize_t start = 0; start < n; start += block) {
        Py_ssize_t m = n - start < block ? n - start : block;
        const T *xb = x + start;
        const U *ub = (const U *)xb;
        double sum, abs_sum;
        FN(sums)(xb, m, &sum, &abs_sum);
        if (!isfinite(sum) || !isfinite(abs_sum)) {
            FN(careful)(xb, m, counts, s);
            continue;
        }
        T lo, hi;
        FN(extremes)(xb, m, &lo, &hi, s);
        int64_t tiny = counts[0] + counts[1];
        double mean = sum / (double)m;
        double m2 = FN(count)(xb, m, mean, counts);
        if (counts[0] + counts[1] != tiny)
            for (Py_ssize_t i = 0; i < m; i++) {
                s->zero += (U)(ub[i] << 1) == 0;
                s->neg_zero += ub[i] == sign;
            }
        merge_moments(s, m, mean, m2, abs_sum);
        s->min = lo < s->min ? lo : s->min;
        s->max = hi > s->max ? hi : s->max;
    }
}

/* The values whose 20-bit code (sign, exponent, leading mantissa bits: the bits of a bucket key,
 * sign first) has its bit set in `bits`, zeros (+0.0 and -0.0) excepted, in their order in x, into
 * out (at most cap of them). Returns how many there were (which may exceed cap: the caller then
 * knows the data changed). Four values are tested at once, and looked at one by one only when one
 * of them is flagged; the bitmap has 2^20 bits (128 KiB), of which only the flagged words are read
 * often. NaN and Inf codes are never flagged. */
static Py_ssize_t
FN(select)(const T *x, Py_ssize_t n, const uint64_t *bits, T *out, Py_ssize_t cap)
{
    const U *u = (const U *)x;
    Py_ssize_t w = 0, i = 0;
#define CODE(b) ((uint32_t)((b) >> (BITS - 20)))
#define FLAGGED(c) ((bits[(c) >> 6] >> ((c) & 63)) & 1)
    for (; i + 4 <= n; i += 4) {
        uint32_t a = CODE(u[i]), b = CODE(u[i + 1]), c = CODE(u[i + 2]), d = CODE(u[i + 3]);
        if (!((bits[a >> 6] >> (a & 63) | bits[b >> 6] >> (b & 63) | bits[c >> 6] >> (c & 63) |
               bits[d >> 6] >> (d & 63)) & 1))
            continue;
        for (Py_ssize_t j = i; j < i + 4; j++) {
            uint32_t q = CODE(u[j]);
            if (FLAGGED(q) && (U)(u[j] << 1) != 0) {
                if (w < cap)
                    out[w] = x[j];
                w++;
            }
        }
    }
    for (; i < n; i++) {
        uint32_t q = CODE(u[i]);
        if (FLAGGED(q) && (U)(u[i] << 1) != 0) {
            if (w < cap)
                out[w] = x[i];
            w++;
        }
    }
#undef CODE
#undef FLAGGED
    return w;
}

/* Negative and positive values of each row of `inner` values. */
CLONES static void
FN(row_signs)(const T *p, Py_ssize_t rows, Py_ssize_t inner, int64_t *neg, int64_t *pos)
{
    for (Py_ssize_t r = 0; r < rows; r++) {
        const T *q = p + r * inner;
        int64_t cn = 0, cp = 0;
        for (Py_ssize_t s = 0; s < inner; s += SPAN) {
            Py_ssize_t e = inner - s < SPAN ? inner - s : SPAN;
            uint32_t an = 0, ap = 0;
            for (Py_ssize_t i = 0; i < e; i++) {
                an += q[s + i] < 0;
                ap += q[s + i] > 0;
            }
            cn += an;
            cp += ap;
        }
        neg[r] = cn;
        pos[r] = cp;
    }
}

/* For a histogram edge e (not NaN): the bucket key of the least value of type T >= e, and whether the
 * greatest value < e has the same key (then that bucket straddles the edge): what numpy gives for
 * e.astype(T), moved up by one step when it rounded down, and nextafter(that, -inf). */
static void
FN(edge)(double e, Py_ssize_t *key, int *same)
{
    /* (beyond the type's range, the least value >= e is +Inf, or -TOP, or -Inf for e = -Inf) */
    T above = e > TOP ? (T)INFINITY : e == -INFINITY ? (T)-INFINITY : e < -TOP ? (T)-TOP : (T)e;
    if ((double)above < e)
        above = NEXT(above, (T)INFINITY);
    T below = NEXT(above, (T)-INFINITY);
    U ua, ub;
    memcpy(&ua, &above, sizeof ua);
    memcpy(&ub, &below, sizeof ub);
    *key = FN(key)(ua);
    *same = *key == FN(key)(ub);
}

#undef T
#undef U
#undef BITS
#undef EXP_MASK
#undef SHIFT
#undef FN
#undef NEXT
#undef TOP
