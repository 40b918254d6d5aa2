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
#include "_reduce.h"

#define T double
#define U uint64_t
#define BITS 64
#define EXP_MASK 0x7ff0000000000000ull
#define SHIFT 44
#define FN(name) CAT(name, f64)
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
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernels", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__kernels(void)
{
    return PyModule_Create(&module);
}
