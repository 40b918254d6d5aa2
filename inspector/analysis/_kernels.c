/* Compiled inner loops of the analyzer (inspector.analysis.kernels wraps them).
 *
 * Each function reads plain C-contiguous buffers (numpy arrays, memoryviews), holds no
 * reference to them after it returns, and releases the GIL while it loops, so that
 * several threads can reduce tensors at once. Every result is checked in tests/test_kernels.py
 * against the numpy module of the same functions (numpy_kernels.py),
 * which the analyzer uses when this one is not built. Every buffer's element type is checked.
 * The float loops are written once, in _reduce.h, included once per type.
 *
 *   count_codes(src, counts)              counts[code] += 1 for every 8/16-bit code of src
 *   moments_buckets(src, counts, block)   moments, extremes, NaN/Inf/zero counts, the
 *                                         magnitude-major bucket counts of float32/float64 values
 *                                         and the range of keys they touched
 *   select_buckets(src, bitmap, out)      the nonzero values of flagged buckets
 *   row_signs(src, code, inner, neg, pos) negative and positive values of each run of `inner`
 *   locate(counts, klo, zero, neg_zero, ranks, edges, width)
 *                                         one walk over bucket counts in value order: the buckets of
 *                                         sorted ranks, those of histogram edges, the bin counts of
 *                                         the other buckets, the negative count
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

#define LANES 8
#define KEYS 256 /* bucket keys computed at a time, ahead of counting them */
/* Counts of a row go through 32-bit lanes (vectorised) in pieces of at most SPAN values. */
#define SPAN ((Py_ssize_t)1 << 30)
#define BUCKETS (1 << 20) /* 1 sign bit + the leading 19 bits of the magnitude */
#define CODES (1 << 20)   /* select_buckets' bitmap: one bit per sign + leading 19 magnitude bits */

/* The element type of a buffer as one struct-module code ('f', 'd', 'B', 'H', 'q'), or 0.
 * 'l' and 'L' are the same as 'q' and 'Q' where long is 64 bits; byte-order prefixes must be native. */
static char
type_code(const Py_buffer *view)
{
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || (*f == '<' && PY_LITTLE_ENDIAN) || (*f == '>' && !PY_LITTLE_ENDIAN))
        f++;
    if (f[0] == 0 || f[1] != 0)
        return 0;
    if (f[0] == 'l' && sizeof(long) == 8)
        return 'q';
    if (f[0] == 'L' && sizeof(long) == 8)
        return 'Q';
    return f[0];
}

/* A C-contiguous buffer whose element type is one of `codes`; on failure a TypeError saying `what`. */
static int
get_typed(PyObject *obj, Py_buffer *view, int writable, const char *codes, const char *what)
{
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Format(PyExc_TypeError, "%s (a C-contiguous%s buffer)", what, writable ? " writable" : "");
        return -1;
    }
    char c = type_code(view);
    if (c == 0 || strchr(codes, c) == NULL) {
        PyErr_Format(PyExc_TypeError, "%s, not format '%s'", what, view->format ? view->format : "B");
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* A writable int64 buffer of at least `need` entries. */
static int
get_counts(PyObject *obj, Py_buffer *view, Py_ssize_t need, const char *what)
{
    if (get_typed(obj, view, 1, "q", "counts must be int64") < 0)
        return -1;
    if (view->len / 8 < need) {
        PyErr_Format(PyExc_ValueError, "%s: counts must have at least %zd entries", what, need);
        PyBuffer_Release(view);
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
    if (get_typed(src_obj, &src, 0, "BH", "count_codes: src must be uint8 or uint16 codes") < 0)
        return NULL;
    Py_ssize_t size = src.itemsize;
    if (get_counts(counts_obj, &counts, (Py_ssize_t)1 << (8 * size), "count_codes") < 0) {
        PyBuffer_Release(&src);
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

/* ---- moments_buckets and select_buckets ---------------------------------------------- */

typedef struct {
    int64_t n;
    double mean, m2, abs_sum;
    double min, max;
    int64_t nan, inf, zero, neg_zero;
    Py_ssize_t klo, khi; /* range of bucket keys touched */
} Summary;

/* Chan et al.: add a block's (n, mean, m2, abs_sum), the same formula as stats.Moments.add. */
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
#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)

#define T float
#define U uint32_t
#define BITS 32
#define EXP_MASK 0x7f800000u
#define SHIFT 12
#define FN(name) CAT(name, f32)
#define NEXT nextafterf
#define TOP FLT_MAX
#include "_reduce.h"

#define T double
#define U uint64_t
#define BITS 64
#define EXP_MASK 0x7ff0000000000000ull
#define SHIFT 44
#define FN(name) CAT(name, f64)
#define NEXT nextafter
#define TOP DBL_MAX
#include "_reduce.h"

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
    if (get_typed(src_obj, &src, 0, "fd", "moments_buckets: src must be float32 or float64") < 0)
        return NULL;
    if (get_counts(counts_obj, &counts, BUCKETS, "moments_buckets") < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    Summary s = {0, 0.0, 0.0, 0.0, INFINITY, -INFINITY, 0, 0, 0, 0, BUCKETS, -1};
    Py_ssize_t n = src.len / src.itemsize;
    Py_BEGIN_ALLOW_THREADS
    if (src.itemsize == 4)
        reduce_f32((const float *)src.buf, n, block, (int64_t *)counts.buf, &s);
    else
        reduce_f64((const double *)src.buf, n, block, (int64_t *)counts.buf, &s);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&counts);
    return Py_BuildValue("LdddddLLLLnn", (long long)s.n, s.mean, s.m2, s.abs_sum, s.min, s.max, (long long)s.nan,
                         (long long)s.inf, (long long)s.zero, (long long)s.neg_zero, s.klo, s.khi);
}

static PyObject *
select_buckets(PyObject *self, PyObject *args)
{
    PyObject *src_obj, *bits_obj, *out_obj;
    Py_buffer src, bits, out;
    if (!PyArg_ParseTuple(args, "OOO", &src_obj, &bits_obj, &out_obj))
        return NULL;
    if (get_typed(src_obj, &src, 0, "fd", "select_buckets: src must be float32 or float64") < 0)
        return NULL;
    if (get_typed(bits_obj, &bits, 0, "Q", "select_buckets: bitmap must be uint64") < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    if (bits.len < CODES / 8) {
        PyErr_Format(PyExc_ValueError, "select_buckets: bitmap must have at least %d words", CODES / 64);
        PyBuffer_Release(&src);
        PyBuffer_Release(&bits);
        return NULL;
    }
    const char *same = src.itemsize == 4 ? "f" : "d";
    if (get_typed(out_obj, &out, 1, same, "select_buckets: out must have src's type") < 0) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&bits);
        return NULL;
    }
    Py_ssize_t n = src.len / src.itemsize, cap = out.len / out.itemsize, got;
    Py_BEGIN_ALLOW_THREADS
    if (src.itemsize == 4)
        got = select_f32((const float *)src.buf, n, (const uint64_t *)bits.buf, (float *)out.buf, cap);
    else
        got = select_f64((const double *)src.buf, n, (const uint64_t *)bits.buf, (double *)out.buf, cap);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&bits);
    PyBuffer_Release(&out);
    return PyLong_FromSsize_t(got);
}


/* ---- locate ----------------------------------------------------------------------------- */

/* Bucket counts of keys klo.. in value order (numpy_kernels.value_order): the odd (negative) keys by
 * falling magnitude, then the zeros (+0.0 and -0.0) as one bucket, then the even keys by rising
 * magnitude. The zeros leave keys 1 (-0.0) and 0 (+0.0). Positions are grouped in runs of RUN
 * buckets counted from the zeros outwards, so that a run's keys lie within 2 * RUN keys. */
#define RUN 64

typedef struct {
    const int64_t *c;
    Py_ssize_t klo, len, odd0, even0, n_odd, size, runs;
    int64_t zero, neg_zero;
    int64_t *odd_runs, *even_runs; /* the sum of each run of each sign (runs of each) */
} Order;

/* One pass over the counts: the sum of each run of odd and of even keys. */
CLONES static void
run_sums(const int64_t *c, Py_ssize_t len, int64_t *par0, int64_t *par1)
{
    Py_ssize_t m = 0;
    for (; (m + 1) * 2 * RUN <= len; m++) {
        const int64_t *b = c + m * 2 * RUN;
        int64_t s0 = 0, s1 = 0;
        for (int i = 0; i < RUN; i++) {
            s0 += b[2 * i];
            s1 += b[2 * i + 1];
        }
        par0[m] = s0;
        par1[m] = s1;
    }
    par0[m] = par1[m] = 0;
    for (Py_ssize_t i = m * 2 * RUN; i < len; i++)
        (i & 1 ? par1 : par0)[m] += c[i];
}

/* The order of these counts, and the sums of its runs; -1 when memory ran out. */
static int
order_init(Order *o, const int64_t *c, Py_ssize_t len, Py_ssize_t klo, int64_t zero, int64_t neg_zero)
{
    o->c = c;
    o->klo = klo;
    o->len = len;
    o->zero = zero;
    o->neg_zero = neg_zero;
    o->odd0 = klo | 1;
    o->even0 = klo + (klo & 1);
    o->n_odd = o->odd0 - klo < len ? (len - 1 - (o->odd0 - klo)) / 2 + 1 : 0;
    Py_ssize_t n_even = o->even0 - klo < len ? (len - 1 - (o->even0 - klo)) / 2 + 1 : 0;
    o->size = o->n_odd + 1 + n_even;
    Py_ssize_t runs = o->runs = len / (2 * RUN) + 1;
    int64_t *par = PyMem_RawMalloc(sizeof(int64_t) * (size_t)(2 * runs));
    if (par == NULL)
        return -1;
    run_sums(c, len, par, par + runs); /* (keys of even index from klo, then those of odd index) */
    o->odd_runs = klo & 1 ? par : par + runs;
    o->even_runs = klo & 1 ? par + runs : par;
    if (o->odd0 == 1 && o->n_odd)
        o->odd_runs[0] -= neg_zero;
    if (o->even0 == 0 && n_even)
        o->even_runs[0] -= zero - neg_zero;
    return 0;
}

static void
order_free(Order *o)
{
    PyMem_RawFree(o->odd_runs < o->even_runs ? o->odd_runs : o->even_runs);
}

/* The key of the bucket at position p (not the zeros'). */
static Py_ssize_t
order_key(const Order *o, Py_ssize_t p)
{
    return p < o->n_odd ? o->odd0 + 2 * (o->n_odd - 1 - p) : o->even0 + 2 * (p - o->n_odd - 1);
}

static int64_t
order_count(const Order *o, Py_ssize_t p)
{
    if (p == o->n_odd)
        return o->zero;
    Py_ssize_t key = order_key(o, p);
    int64_t c = o->c[key - o->klo];
    return key == 1 ? c - o->neg_zero : key == 0 ? c - (o->zero - o->neg_zero) : c;
}

/* The value-order position of the bucket of key k: 0 below all buckets, size above them all. */
static Py_ssize_t
order_position(const Order *o, Py_ssize_t k)
{
    Py_ssize_t steps = (k - ((k & 1) ? o->odd0 : o->even0)) / 2; /* (an even difference) */
    steps = steps < -1 ? -1 : steps;
    Py_ssize_t p = (k & 1) ? o->n_odd - 1 - steps : o->n_odd + 1 + steps;
    return p < 0 ? 0 : p > o->size ? o->size : p;
}

typedef struct {
    Py_ssize_t pos, index;
} Stop;

static int
stop_cmp(const void *a, const void *b)
{
    Py_ssize_t x = ((const Stop *)a)->pos, y = ((const Stop *)b)->pos;
    return x < y ? -1 : x > y;
}

/* The state of a walk: the ranks (sorted) and stops (sorted by position) still ahead, what is
 * found for them, and the count so far. */
typedef struct {
    const int64_t *ranks;
    Py_ssize_t nr, ir;
    int64_t *where, *before, *count;
    const Stop *stops;
    Py_ssize_t ns, is;
    int64_t *below;
    int64_t cum;
} Walk;

/* Positions [lo, hi), whose counts sum to `sum`: passed whole when no rank or stop is among them. */
static void
walk_run(const Order *o, Walk *w, Py_ssize_t lo, Py_ssize_t hi, int64_t sum)
{
    if ((w->ir == w->nr || w->cum + sum <= w->ranks[w->ir]) && (w->is == w->ns || w->stops[w->is].pos >= hi)) {
        w->cum += sum;
        return;
    }
    /* (a run without the zeros or keys 0 and 1 is read two keys apart, down or up) */
    int plain = hi < o->n_odd || lo > o->n_odd + 1;
    Py_ssize_t at = plain ? order_key(o, lo) - o->klo : 0, step = lo < o->n_odd ? -2 : 2;
    int64_t start = w->cum;
    for (Py_ssize_t p = lo; p < hi; p++, at += step) {
        for (; w->is < w->ns && w->stops[w->is].pos == p; w->is++)
            w->below[w->stops[w->is].index] = w->cum;
        if ((w->ir == w->nr || start + sum <= w->ranks[w->ir]) && (w->is == w->ns || w->stops[w->is].pos >= hi)) {
            w->cum = start + sum; /* nothing more to find in this run */
            return;
        }
        int64_t c = plain ? o->c[at] : order_count(o, p);
        for (; w->ir < w->nr && w->cum + c > w->ranks[w->ir]; w->ir++) {
            w->where[w->ir] = p;
            w->before[w->ir] = w->cum;
            w->count[w->ir] = c;
        }
        w->cum += c;
    }
}

/* One walk in value order, run by run: for each rank (sorted), the position of its bucket (the first
 * whose cumulative count exceeds it), the count before it and its count; for each stop, the count
 * before its position; and the count before the zeros (the negative values). Past the zeros it ends
 * when nothing is left to find. */
static void
order_walk(const Order *o, Walk *w, int64_t *neg)
{
    Py_ssize_t n_even = o->size - o->n_odd - 1;
    for (Py_ssize_t m = (o->n_odd + RUN - 1) / RUN - 1; m >= 0; m--) {
        Py_ssize_t lo = o->n_odd - RUN * (m + 1);
        walk_run(o, w, lo < 0 ? 0 : lo, o->n_odd - RUN * m, o->odd_runs[m]);
    }
    *neg = w->cum;
    walk_run(o, w, o->n_odd, o->n_odd + 1, o->zero);
    for (Py_ssize_t m = 0; m * RUN < n_even && (w->ir < w->nr || w->is < w->ns); m++) {
        Py_ssize_t lo = o->n_odd + 1 + RUN * m, hi = lo + RUN;
        walk_run(o, w, lo, hi < o->size ? hi : o->size, o->even_runs[m]);
    }
    for (; w->is < w->ns; w->is++) /* (stops at the end) */
        w->below[w->stops[w->is].index] = w->cum;
}

static PyObject *
int64_list(const int64_t *v, Py_ssize_t n)
{
    PyObject *list = PyList_New(n);
    for (Py_ssize_t i = 0; list && i < n; i++) {
        PyObject *x = PyLong_FromLongLong((long long)v[i]);
        if (x == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, x);
    }
    return list;
}

/* The ranks must be sorted (and, checked by the walk, below the number of values); edges not NaN. */
static int
locate_check(const int64_t *ranks, Py_ssize_t nr, const double *edges, Py_ssize_t ne)
{
    for (Py_ssize_t i = 1; i < nr; i++)
        if (ranks[i] < ranks[i - 1]) {
            PyErr_SetString(PyExc_ValueError, "locate: ranks must be sorted");
            return -1;
        }
    for (Py_ssize_t i = 0; i < ne; i++)
        if (isnan(edges[i])) {
            PyErr_SetString(PyExc_ValueError, "locate: edges must not be NaN");
            return -1;
        }
    return 0;
}

/* The edges' stops (the positions of their buckets, sorted), and for each whether a bucket straddles
 * it (of values below and above it), as that bucket's count. */
static void
locate_edges(const Order *o, const double *edges, Py_ssize_t ne, int width, Stop *stops, int64_t *pos,
             int64_t *straddled)
{
    int sorted = 1;
    for (Py_ssize_t i = 0; i < ne; i++) {
        Py_ssize_t key, p;
        int same;
        if (width == 4)
            edge_f32(edges[i], &key, &same);
        else
            edge_f64(edges[i], &key, &same);
        p = order_position(o, key);
        pos[i] = p;
        straddled[i] = same && p < o->size && p != o->n_odd ? order_count(o, p) : 0;
        stops[i].pos = p;
        stops[i].index = i;
        sorted = sorted && (i == 0 || p >= stops[i - 1].pos);
    }
    if (!sorted) /* (edges in order give their positions in order) */
        qsort(stops, (size_t)ne, sizeof *stops, stop_cmp);
}

static int
position_cmp(const void *a, const void *b)
{
    Py_ssize_t x = *(const Py_ssize_t *)a, y = *(const Py_ssize_t *)b;
    return x < y ? -1 : x > y;
}

/* The bin counts of the buckets not located (neither a rank's, nor straddling an edge, nor the zeros'),
 * each within one bin: bin k holds the buckets from that of edge k - 1 to that of edge k (the first
 * and last bins: all below, all above). `spots` has room for nr + ne + 1 positions. */
static void
located_hist(const Order *o, const int64_t *where, Py_ssize_t nr, const int64_t *pos, const int64_t *straddled,
             const int64_t *below, const Stop *stops, Py_ssize_t ne, int64_t *hist, Py_ssize_t *spots)
{
    int64_t total = o->zero;
    for (Py_ssize_t m = 0; m < o->runs; m++)
        total += o->odd_runs[m] + o->even_runs[m];
    for (Py_ssize_t k = 0; k <= ne; k++)
        hist[k] = (k == ne ? total : below[k]) - (k ? below[k - 1] : 0);
    Py_ssize_t n = 0;
    spots[n++] = o->n_odd;
    for (Py_ssize_t i = 0; i < nr; i++)
        if (where[i] != o->n_odd)
            spots[n++] = (Py_ssize_t)where[i];
    for (Py_ssize_t j = 0; j < ne; j++)
        if (straddled[j])
            spots[n++] = (Py_ssize_t)pos[j];
    qsort(spots, (size_t)n, sizeof *spots, position_cmp);
    Py_ssize_t bin = 0; /* the edges at or below the spot: its bin */
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i && spots[i] == spots[i - 1])
            continue;
        while (bin < ne && stops[bin].pos <= spots[i])
            bin++;
        hist[bin] -= order_count(o, spots[i]);
    }
}

/* The distinct positions of the buckets straddling an edge, in order, with their counts; how many. */
static Py_ssize_t
straddling(const int64_t *pos, const int64_t *straddled, const Stop *stops, Py_ssize_t ne, int64_t *at,
           int64_t *count)
{
    Py_ssize_t k = 0;
    for (Py_ssize_t i = 0; i < ne; i++) {
        Py_ssize_t j = stops[i].index;
        if (straddled[j] && (k == 0 || at[k - 1] != pos[j])) {
            at[k] = pos[j];
            count[k++] = straddled[j];
        }
    }
    return k;
}

/* v: where, before, count (nr each), pos, straddled, below (ne each, not returned), hist (ne + 1), the
 * positions and counts of the ns straddling buckets (ne each): as a tuple of lists and neg. */
static PyObject *
locate_result(const int64_t *v, Py_ssize_t nr, Py_ssize_t ne, Py_ssize_t ns, int64_t neg)
{
    PyObject *lists[6] = {NULL};
    const int64_t *h = v + 3 * nr + 3 * ne, *starts[6] = {v, v + nr, v + 2 * nr, h + ne + 1, h + 2 * ne + 1, h};
    Py_ssize_t sizes[6] = {nr, nr, nr, ns, ns, ne + 1};
    int ok = 1;
    for (int i = 0; i < 6; i++) {
        lists[i] = int64_list(starts[i], sizes[i]);
        ok = ok && lists[i];
    }
    PyObject *out = ok ? Py_BuildValue("OOOOOOL", lists[0], lists[1], lists[2], lists[3], lists[4], lists[5],
                                       (long long)neg)
                       : NULL;
    for (int i = 0; i < 6; i++)
        Py_XDECREF(lists[i]);
    return out;
}

static PyObject *
locate_run(const Py_buffer *counts, Py_ssize_t klo, int64_t zero, int64_t neg_zero, const Py_buffer *ranks,
           const Py_buffer *edges, int width)
{
    Py_ssize_t nr = ranks->len / 8, ne = edges->len / 8;
    if (locate_check((const int64_t *)ranks->buf, nr, (const double *)edges->buf, ne) < 0)
        return NULL;
    int64_t *v = PyMem_Malloc(sizeof(int64_t) * (size_t)(3 * nr + 6 * ne + 1)), neg, *h = v + 3 * nr + 3 * ne;
    Py_ssize_t ns = 0;
    Stop *stops = PyMem_Malloc(sizeof(Stop) * (size_t)(ne + 1));
    Py_ssize_t *spots = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(nr + ne + 1));
    Order o;
    int failed = v == NULL || stops == NULL || spots == NULL;
    Py_BEGIN_ALLOW_THREADS
    failed = failed || order_init(&o, (const int64_t *)counts->buf, counts->len / 8, klo, zero, neg_zero) < 0;
    if (!failed) {
        Walk w = {(const int64_t *)ranks->buf, nr, 0, v, v + nr, v + 2 * nr, stops, ne, 0, v + 3 * nr + 2 * ne, 0};
        locate_edges(&o, (const double *)edges->buf, ne, width, stops, v + 3 * nr, v + 3 * nr + ne);
        order_walk(&o, &w, &neg);
        failed = w.ir < nr ? 2 : 0; /* (a rank beyond the values counted: nothing more to find) */
        if (!failed) {
            located_hist(&o, v, nr, v + 3 * nr, v + 3 * nr + ne, w.below, stops, ne, h, spots);
            ns = straddling(v + 3 * nr, v + 3 * nr + ne, stops, ne, h + ne + 1, h + 2 * ne + 1);
        }
        order_free(&o);
    }
    Py_END_ALLOW_THREADS
    PyObject *out = failed ? NULL : locate_result(v, nr, ne, ns, neg);
    if (failed == 1)
        PyErr_NoMemory();
    else if (failed == 2)
        PyErr_SetString(PyExc_ValueError, "locate: ranks must be below the number of values counted");
    PyMem_Free(v);
    PyMem_Free(stops);
    PyMem_Free(spots);
    return out;
}

static PyObject *
locate(PyObject *self, PyObject *args)
{
    PyObject *counts_obj, *ranks_obj, *edges_obj;
    Py_ssize_t klo;
    long long zero, neg_zero;
    int width;
    Py_buffer counts, ranks, edges;
    if (!PyArg_ParseTuple(args, "OnLLOOi", &counts_obj, &klo, &zero, &neg_zero, &ranks_obj, &edges_obj, &width))
        return NULL;
    if (width != 4 && width != 8) {
        PyErr_SetString(PyExc_ValueError, "locate: width must be 4 or 8");
        return NULL;
    }
    if (get_typed(counts_obj, &counts, 0, "q", "locate: counts must be int64") < 0)
        return NULL;
    if (get_typed(ranks_obj, &ranks, 0, "q", "locate: ranks must be int64") < 0) {
        PyBuffer_Release(&counts);
        return NULL;
    }
    if (get_typed(edges_obj, &edges, 0, "d", "locate: edges must be float64") < 0) {
        PyBuffer_Release(&counts);
        PyBuffer_Release(&ranks);
        return NULL;
    }
    PyObject *out = locate_run(&counts, klo, zero, neg_zero, &ranks, &edges, width);
    PyBuffer_Release(&counts);
    PyBuffer_Release(&ranks);
    PyBuffer_Release(&edges);
    return out;
}

/* ---- row_signs ----------------------------------------------------------------------- */


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

static PyObject *
row_signs(PyObject *self, PyObject *args)
{
    PyObject *src_obj, *neg_obj, *pos_obj;
    int code;
    Py_ssize_t inner;
    Py_buffer src, neg, pos;
    if (!PyArg_ParseTuple(args, "OCnOO", &src_obj, &code, &inner, &neg_obj, &pos_obj))
        return NULL;
    const char *type = code == 'b' || code == 'e' ? "H" : code == 'f' ? "f" : code == 'd' ? "d" : NULL;
    if (type == NULL || inner <= 0) {
        PyErr_SetString(PyExc_ValueError, "row_signs: code must be one of b, e, f, d and inner positive");
        return NULL;
    }
    if (get_typed(src_obj, &src, 0, type, "row_signs: src must hold values of the code's type") < 0)
        return NULL;
    Py_ssize_t n = src.len / src.itemsize, rows = n / inner;
    if (n != rows * inner) {
        PyErr_SetString(PyExc_ValueError, "row_signs: src must hold whole rows");
        PyBuffer_Release(&src);
        return NULL;
    }
    if (get_counts(neg_obj, &neg, rows, "row_signs") < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    if (get_counts(pos_obj, &pos, rows, "row_signs") < 0) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&neg);
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
     "moments_buckets(src, counts, block) -> (n, mean, m2, abs_sum, min, max, nan, inf, zero, neg_zero, klo, khi)."},
    {"select_buckets", select_buckets, METH_VARARGS,
     "select_buckets(src, bitmap, out) -> number of nonzero values whose bucket's bit is set in bitmap."},
    {"row_signs", row_signs, METH_VARARGS,
     "row_signs(src, code, inner, neg, pos): negative / positive values of each run of inner values."},
    {"locate", locate, METH_VARARGS,
     "locate(counts, klo, zero, neg_zero, ranks, edges, width) -> (where, before, count, straddling, "
     "straddling_count, hist, neg)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
