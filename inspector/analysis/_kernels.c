/* Compiled inner loops of the analyzer (inspector.analysis.kernels wraps them).
 *
 * Each function reads plain C-contiguous buffers (numpy arrays, memoryviews), holds no
 * reference to them after it returns, and releases the GIL while it loops, so that
 * several threads can reduce tensors at once. Every result is checked against numpy in
 * tests/test_kernels.py, and the analyzer falls back to numpy when this module is not built.
 *
 *   count_codes(src, counts)              counts[code] += 1 for every 8/16-bit code of src
 *   moments_buckets(src, counts, block)   moments, extremes, NaN/Inf/zero counts and the
 *                                         magnitude-major bucket counts of float32/float64 values
 *   row_signs(src, code, inner, neg, pos) negative and positive values of each run of `inner`
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

#define LANES 8
#define BUCKETS (1 << 20) /* 1 sign bit + the leading 19 bits of the magnitude */

static int
get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *what)
{
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s: a C-contiguous%s buffer is needed", what,
                     writable ? " writable" : "");
        return -1;
    }
    return 0;
}

static int
check_counts(Py_buffer *counts, Py_ssize_t need, const char *what)
{
    if (counts->itemsize != 8 || counts->len / 8 < need) {
        PyErr_Format(PyExc_ValueError, "%s: counts must be int64 with at least %zd entries", what, need);
        return -1;
    }
    return 0;
}

/* ---- count_codes ------------------------------------------------------------------- */

CLONES static void
count16(const uint16_t *p, Py_ssize_t n, int64_t *counts)
{
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        counts[p[i]]++;
        counts[p[i + 1]]++;
        counts[p[i + 2]]++;
        counts[p[i + 3]]++;
    }
    for (; i < n; i++)
        counts[p[i]]++;
}

static void
count8(const uint8_t *p, Py_ssize_t n, int64_t *counts)
{
    /* four tables, so that runs of one code do not wait on one counter */
    int64_t t[4][256];
    memset(t, 0, sizeof t);
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        t[0][p[i]]++;
        t[1][p[i + 1]]++;
        t[2][p[i + 2]]++;
        t[3][p[i + 3]]++;
    }
    for (; i < n; i++)
        t[0][p[i]]++;
    for (int c = 0; c < 256; c++)
        counts[c] += t[0][c] + t[1][c] + t[2][c] + t[3][c];
}

static PyObject *
count_codes(PyObject *self, PyObject *args)
{
    PyObject *src_obj, *counts_obj;
    Py_buffer src, counts;
    if (!PyArg_ParseTuple(args, "OO", &src_obj, &counts_obj))
        return NULL;
    if (get_buffer(src_obj, &src, 0, "count_codes") < 0)
        return NULL;
    if (get_buffer(counts_obj, &counts, 1, "count_codes") < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    Py_ssize_t size = src.itemsize;
    if ((size != 1 && size != 2) || check_counts(&counts, (Py_ssize_t)1 << (8 * size), "count_codes") < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "count_codes: src must have 1- or 2-byte items");
        PyBuffer_Release(&src);
        PyBuffer_Release(&counts);
        return NULL;
    }
    Py_ssize_t n = src.len / size;
    Py_BEGIN_ALLOW_THREADS
    if (size == 2)
        count16((const uint16_t *)src.buf, n, (int64_t *)counts.buf);
    else
        count8((const uint8_t *)src.buf, n, (int64_t *)counts.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&counts);
    Py_RETURN_NONE;
}

/* ---- moments_buckets --------------------------------------------------------------- */

typedef struct {
    int64_t n;
    double mean, m2, abs_sum;
    double min, max;
    int64_t nan, inf, zero, neg_zero;
} Summary;

/* Chan et al.: add a block's (n, mean, m2, abs_sum), the same formula as _Moments.add. */
static void
merge_moments(Summary *s, int64_t n, double mean, double m2, double abs_sum)
{
    if (n == 0)
        return;
    if (s->n == 0) {
        s->n = n;
        s->mean = mean;
        s->m2 = m2;
        s->abs_sum = abs_sum;
        return;
    }
    double total = (double)(s->n + n);
    double delta = mean - s->mean;
    s->mean += delta * (double)n / total;
    s->m2 += m2 + delta * delta * (double)s->n * (double)n / total;
    s->abs_sum += abs_sum;
    s->n += n;
}

/* One template for float32 (T=float, U=uint32_t) and float64 (T=double, U=uint64_t), block by
 * block, each step a simple loop over the block while it sits in cache:
 *   1. sum and |x| sum in LANES independent float64 accumulators (vectorised). A sum that is
 *      not finite means the block holds NaN or Inf, or (float64 only) that its sum overflows:
 *      the block then takes the careful path, which checks every value;
 *   2. min and max, of values now known to be finite; 3. bucket counts; 4. M2 about the
 *      block's mean;
 *   5. zeros and -0.0, counted only when a value fell into bucket 0 or 1 (zero and the
 *      tiniest subnormals). */
#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif
#if defined(__GNUC__) && !defined(__clang__)
#define FINITE __attribute__((optimize("finite-math-only", "no-signed-zeros")))
#else
#define FINITE
#endif

#define DEFINE_REDUCE(NAME, T, U, BITS, EXP_MASK, SHIFT)                                           \
    static inline Py_ssize_t NAME##_key(U b)                                                       \
    {                                                                                              \
        return (Py_ssize_t)((((U)(b << 1) >> (SHIFT + 1)) << 1) | (b >> (BITS - 1)));              \
    }                                                                                              \
                                                                                                   \
    /* each step its own function: the vectoriser then keeps the lanes in registers */             \
    CLONES NOINLINE static void NAME##_sums(const T *x, Py_ssize_t m, double *sum, double *abs_sum) \
    {                                                                                              \
        double sl[LANES] = {0}, al[LANES] = {0}, s = 0, a = 0;                                     \
        Py_ssize_t whole = m / LANES * LANES;                                                      \
        for (Py_ssize_t i = 0; i < whole; i += LANES)                                              \
            for (int j = 0; j < LANES; j++) {                                                      \
                double d = x[i + j];                                                               \
                sl[j] += d;                                                                        \
                al[j] += fabs(d);                                                                  \
            }                                                                                      \
        for (Py_ssize_t i = whole; i < m; i++) {                                                   \
            s += x[i];                                                                             \
            a += fabs((double)x[i]);                                                               \
        }                                                                                          \
        for (int j = 0; j < LANES; j++) {                                                          \
            s += sl[j];                                                                            \
            a += al[j];                                                                            \
        }                                                                                          \
        *sum = s;                                                                                  \
        *abs_sum = a;                                                                              \
    }                                                                                              \
                                                                                                   \
    /* only called on blocks of finite values, where finite-math is exact; either zero may be \
     * reported for a block whose extreme is 0.0 and -0.0 at once (they compare equal) */         \
    CLONES NOINLINE FINITE static void NAME##_extremes(const T *x, Py_ssize_t m, T *lo_out, T *hi_out) \
    {                                                                                              \
        T lo = INFINITY, hi = -INFINITY;                                                           \
        for (Py_ssize_t i = 0; i < m; i++) {                                                       \
            T v = x[i];                                                                            \
            lo = v < lo ? v : lo;                                                                  \
            hi = v > hi ? v : hi;                                                                  \
        }                                                                                          \
        *lo_out = lo;                                                                              \
        *hi_out = hi;                                                                              \
    }                                                                                              \
                                                                                                   \
    CLONES NOINLINE static double NAME##_m2(const T *x, Py_ssize_t m, double mean)                 \
    {                                                                                              \
        double ql[LANES] = {0}, m2 = 0;                                                            \
        Py_ssize_t whole = m / LANES * LANES;                                                      \
        for (Py_ssize_t i = 0; i < whole; i += LANES)                                              \
            for (int j = 0; j < LANES; j++) {                                                      \
                double d = (double)x[i + j] - mean;                                                \
                ql[j] += d * d;                                                                    \
            }                                                                                      \
        for (Py_ssize_t i = whole; i < m; i++) {                                                   \
            double d = (double)x[i] - mean;                                                        \
            m2 += d * d;                                                                           \
        }                                                                                          \
        for (int j = 0; j < LANES; j++)                                                            \
            m2 += ql[j];                                                                           \
        return m2;                                                                                 \
    }                                                                                              \
                                                                                                   \
    NOINLINE static void NAME##_count(const U *u, Py_ssize_t m, int64_t *counts)                   \
    {                                                                                              \
        Py_ssize_t k = 0;                                                                          \
        for (; k + 4 <= m; k += 4) {                                                               \
            counts[NAME##_key(u[k])]++;                                                            \
            counts[NAME##_key(u[k + 1])]++;                                                        \
            counts[NAME##_key(u[k + 2])]++;                                                        \
            counts[NAME##_key(u[k + 3])]++;                                                        \
        }                                                                                          \
        for (; k < m; k++)                                                                         \
            counts[NAME##_key(u[k])]++;                                                            \
    }                                                                                              \
                                                                                                   \
    static void NAME##_careful(const T *xb, Py_ssize_t m, int64_t *counts, Summary *s)             \
    {                                                                                              \
        const U *ub = (const U *)xb;                                                               \
        const U sign = (U)1 << (BITS - 1);                                                         \
        double sum = 0, abs_sum = 0, m2 = 0;                                                       \
        T lo = INFINITY, hi = -INFINITY;                                                           \
        int64_t finite = 0, zero = 0, neg_zero = 0;                                                \
        for (Py_ssize_t i = 0; i < m; i++) {                                                       \
            U b = ub[i];                                                                           \
            if ((b & EXP_MASK) == EXP_MASK) {                                                      \
                if (b & ~((U)EXP_MASK | sign))                                                     \
                    s->nan++;                                                                      \
                else                                                                               \
                    s->inf++;                                                                      \
                continue;                                                                          \
            }                                                                                      \
            T v = xb[i];                                                                           \
            finite++;                                                                              \
            sum += v;                                                                              \
            abs_sum += fabs((double)v);                                                            \
            lo = v < lo ? v : lo;                                                                  \
            hi = v > hi ? v : hi;                                                                  \
            zero += (U)(b << 1) == 0;                                                              \
            neg_zero += b == sign;                                                                 \
            counts[NAME##_key(b)]++;                                                               \
        }                                                                                          \
        if (finite == 0)                                                                           \
            return;                                                                                \
        double mean = sum / (double)finite;                                                        \
        for (Py_ssize_t i = 0; i < m; i++)                                                         \
            if ((ub[i] & EXP_MASK) != EXP_MASK) {                                                  \
                double d = (double)xb[i] - mean;                                                   \
                m2 += d * d;                                                                       \
            }                                                                                      \
        merge_moments(s, finite, mean, m2, abs_sum);                                               \
        s->min = lo < s->min ? lo : s->min;                                                        \
        s->max = hi > s->max ? hi : s->max;                                                        \
        s->zero += zero;                                                                           \
        s->neg_zero += neg_zero;                                                                   \
    }                                                                                              \
                                                                                                   \
    static void NAME(const T *x, Py_ssize_t n, Py_ssize_t block, int64_t *counts, Summary *s)      \
    {                                                                                              \
        const U sign = (U)1 << (BITS - 1);                                                         \
        for (Py_ssize_t start = 0; start < n; start += block) {                                    \
            Py_ssize_t m = n - start < block ? n - start : block;                                  \
            const T *xb = x + start;                                                               \
            const U *ub = (const U *)xb;                                                           \
            double sum, abs_sum;                                                                   \
            NAME##_sums(xb, m, &sum, &abs_sum);                                                    \
            if (!isfinite(sum) || !isfinite(abs_sum)) {                                            \
                NAME##_careful(xb, m, counts, s);                                                  \
                continue;                                                                          \
            }                                                                                      \
            T lo, hi;                                                                              \
            NAME##_extremes(xb, m, &lo, &hi);                                                      \
            int64_t tiny = counts[0] + counts[1];                                                  \
            NAME##_count(ub, m, counts);                                                           \
            if (counts[0] + counts[1] != tiny)                                                     \
                for (Py_ssize_t i = 0; i < m; i++) {                                               \
                    s->zero += (U)(ub[i] << 1) == 0;                                               \
                    s->neg_zero += ub[i] == sign;                                                  \
                }                                                                                  \
            double mean = sum / (double)m;                                                         \
            merge_moments(s, m, mean, NAME##_m2(xb, m, mean), abs_sum);                            \
            s->min = lo < s->min ? lo : s->min;                                                    \
            s->max = hi > s->max ? hi : s->max;                                                    \
        }                                                                                          \
    }

DEFINE_REDUCE(reduce_f32, float, uint32_t, 32, 0x7f800000u, 12)
DEFINE_REDUCE(reduce_f64, double, uint64_t, 64, 0x7ff0000000000000ull, 44)

static PyObject *
moments_buckets(PyObject *self, PyObject *args)
{
    PyObject *src_obj, *counts_obj;
    Py_ssize_t block;
    Py_buffer src, counts;
    if (!PyArg_ParseTuple(args, "OOn", &src_obj, &counts_obj, &block))
        return NULL;
    if (block <= 0) {
        PyErr_SetString(PyExc_ValueError, "moments_buckets: block must be positive");
        return NULL;
    }
    if (get_buffer(src_obj, &src, 0, "moments_buckets") < 0)
        return NULL;
    if (get_buffer(counts_obj, &counts, 1, "moments_buckets") < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    if ((src.itemsize != 4 && src.itemsize != 8) || check_counts(&counts, BUCKETS, "moments_buckets") < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "moments_buckets: src must be float32 or float64");
        PyBuffer_Release(&src);
        PyBuffer_Release(&counts);
        return NULL;
    }
    Summary s = {0, 0.0, 0.0, 0.0, INFINITY, -INFINITY, 0, 0, 0, 0};
    Py_ssize_t n = src.len / src.itemsize;
    Py_BEGIN_ALLOW_THREADS
    if (src.itemsize == 4)
        reduce_f32((const float *)src.buf, n, block, (int64_t *)counts.buf, &s);
    else
        reduce_f64((const double *)src.buf, n, block, (int64_t *)counts.buf, &s);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&counts);
    return Py_BuildValue("LdddddLLLL", (long long)s.n, s.mean, s.m2, s.abs_sum, s.min, s.max, (long long)s.nan,
                         (long long)s.inf, (long long)s.zero, (long long)s.neg_zero);
}

/* ---- row_signs ----------------------------------------------------------------------- */

/* Counts of a row go through 32-bit lanes (vectorised) in pieces of at most SPAN values. */
#define SPAN ((Py_ssize_t)1 << 30)

/* 16-bit floats by their bits: negative codes are (0x8000, 0x8000 + pos_top], positive
 * ones [1, pos_top]; NaN codes lie above both and -0.0 / +0.0 are neither. */
CLONES static void
row_signs16(const uint16_t *p, Py_ssize_t rows, Py_ssize_t inner, uint16_t pos_top, int64_t *neg, int64_t *pos)
{
    const uint16_t span = (uint16_t)(pos_top - 1);
    for (Py_ssize_t r = 0; r < rows; r++) {
        const uint16_t *q = p + r * inner;
        int64_t cn = 0, cp = 0;
        for (Py_ssize_t s = 0; s < inner; s += SPAN) {
            Py_ssize_t e = inner - s < SPAN ? inner - s : SPAN;
            uint32_t an = 0, ap = 0;
            for (Py_ssize_t i = 0; i < e; i++) {
                an += (uint16_t)(q[s + i] - 0x8001u) <= span;
                ap += (uint16_t)(q[s + i] - 1u) <= span;
            }
            cn += an;
            cp += ap;
        }
        neg[r] = cn;
        pos[r] = cp;
    }
}

#define DEFINE_ROW_SIGNS(NAME, T)                                                                 \
    CLONES static void NAME(const T *p, Py_ssize_t rows, Py_ssize_t inner, int64_t *neg, int64_t *pos) \
    {                                                                                             \
        for (Py_ssize_t r = 0; r < rows; r++) {                                                   \
            const T *q = p + r * inner;                                                           \
            int64_t cn = 0, cp = 0;                                                               \
            for (Py_ssize_t s = 0; s < inner; s += SPAN) {                                        \
                Py_ssize_t e = inner - s < SPAN ? inner - s : SPAN;                               \
                uint32_t an = 0, ap = 0;                                                          \
                for (Py_ssize_t i = 0; i < e; i++) {                                              \
                    an += q[s + i] < 0;                                                           \
                    ap += q[s + i] > 0;                                                           \
                }                                                                                 \
                cn += an;                                                                         \
                cp += ap;                                                                         \
            }                                                                                     \
            neg[r] = cn;                                                                          \
            pos[r] = cp;                                                                          \
        }                                                                                         \
    }

DEFINE_ROW_SIGNS(row_signs_f32, float)
DEFINE_ROW_SIGNS(row_signs_f64, double)

static PyObject *
row_signs(PyObject *self, PyObject *args)
{
    PyObject *src_obj, *neg_obj, *pos_obj;
    int code;
    Py_ssize_t inner;
    Py_buffer src, neg, pos;
    if (!PyArg_ParseTuple(args, "OCnOO", &src_obj, &code, &inner, &neg_obj, &pos_obj))
        return NULL;
    Py_ssize_t size = code == 'b' || code == 'e' ? 2 : code == 'f' ? 4 : code == 'd' ? 8 : 0;
    if (size == 0 || inner <= 0) {
        PyErr_SetString(PyExc_ValueError, "row_signs: code must be one of b, e, f, d and inner positive");
        return NULL;
    }
    if (get_buffer(src_obj, &src, 0, "row_signs") < 0)
        return NULL;
    if (get_buffer(neg_obj, &neg, 1, "row_signs") < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    if (get_buffer(pos_obj, &pos, 1, "row_signs") < 0) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&neg);
        return NULL;
    }
    Py_ssize_t n = src.len / size, rows = n / inner;
    if (src.itemsize != size || n != rows * inner || check_counts(&neg, rows, "row_signs") < 0 ||
        check_counts(&pos, rows, "row_signs") < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "row_signs: src must hold whole rows of the code's type");
        PyBuffer_Release(&src);
        PyBuffer_Release(&neg);
        PyBuffer_Release(&pos);
        return NULL;
    }
    int64_t *pn = (int64_t *)neg.buf, *pp = (int64_t *)pos.buf;
    Py_BEGIN_ALLOW_THREADS
    if (code == 'b')
        row_signs16((const uint16_t *)src.buf, rows, inner, 0x7f80, pn, pp);
    else if (code == 'e')
        row_signs16((const uint16_t *)src.buf, rows, inner, 0x7c00, pn, pp);
    else if (code == 'f')
        row_signs_f32((const float *)src.buf, rows, inner, pn, pp);
    else
        row_signs_f64((const double *)src.buf, rows, inner, pn, pp);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&neg);
    PyBuffer_Release(&pos);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"count_codes", count_codes, METH_VARARGS, "count_codes(src, counts): counts[code] += 1 for each code of src."},
    {"moments_buckets", moments_buckets, METH_VARARGS,
     "moments_buckets(src, counts, block) -> (n, mean, m2, abs_sum, min, max, nan, inf, zero, neg_zero)."},
    {"row_signs", row_signs, METH_VARARGS,
     "row_signs(src, code, inner, neg, pos): negative / positive values of each run of inner values."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
