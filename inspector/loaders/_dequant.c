/* Compiled dequantization of GGUF (ggml) quantized blocks (inspector.loaders.dequant wraps it).
 *
 *   dequantize(type_id, src, dst)   the real values of the whole blocks in src (bytes) into dst
 *                                   (float32, at least blocks * block_size values)
 *   block_shape(type_id)            (block_size, type_size) of a type this module decodes, or None
 *
 * Every value is computed as ggml's reference (and gguf-py's numpy) dequantization computes it,
 * in float32 with the same order of operations, so the results agree bit for bit (build with
 * floating-point contraction off: a fused multiply-add would round differently). Checked against
 * gguf.quants.dequantize in tests/test_gguf_dequant.py. The GIL is released while decoding.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

#define QK_K 256

static float f16_table[65536];

static float
half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, bits;
    if (exp == 0 && mant == 0) {
        bits = sign;
    } else if (exp == 0) { /* subnormal: normalise */
        int e = -1;
        do {
            e++;
            mant <<= 1;
        } while (!(mant & 0x400u));
        bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3FFu) << 13);
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline float
H(const uint8_t *p) /* a little-endian float16 */
{
    return f16_table[(uint16_t)(p[0] | (p[1] << 8))];
}

static const int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* ---- 32-value blocks ------------------------------------------------------------------ */

CLONES static void
deq_q4_0(const uint8_t *b, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++, b += 18, y += 32) {
        const float d = H(b);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)((b[2 + j] & 0x0F) - 8);
            y[j + 16] = d * (float)((b[2 + j] >> 4) - 8);
        }
    }
}

CLONES static void
deq_q4_1(const uint8_t *b, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++, b += 20, y += 32) {
        const float d = H(b), m = H(b + 2);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)(b[4 + j] & 0x0F) + m;
            y[j + 16] = d * (float)(b[4 + j] >> 4) + m;
        }
    }
}

static inline uint32_t
le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

CLONES static void
deq_q5_0(const uint8_t *b, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++, b += 22, y += 32) {
        const float d = H(b);
        const uint32_t qh = le32(b + 2);
        const uint8_t *qs = b + 6;
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)((int)((qs[j] & 0x0F) | (((qh >> j) & 1) << 4)) - 16);
            y[j + 16] = d * (float)((int)((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16);
        }
    }
}

CLONES static void
deq_q5_1(const uint8_t *b, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++, b += 24, y += 32) {
        const float d = H(b), m = H(b + 2);
        const uint32_t qh = le32(b + 4);
        const uint8_t *qs = b + 8;
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)((qs[j] & 0x0F) | (((qh >> j) & 1) << 4)) + m;
            y[j + 16] = d * (float)((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) + m;
        }
    }
}

CLONES static void
deq_q8_0(const uint8_t *b, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++, b += 34, y += 32) {
        const float d = H(b);
        const int8_t *qs = (const int8_t *)(b + 2);
        for (int j = 0; j < 32; j++)
            y[j] = (float)qs[j] * d;
    }
}

CLONES static void
deq_iq4_nl(const uint8_t *b, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++, b += 18, y += 32) {
        const float d = H(b);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)kvalues_iq4nl[b[2 + j] & 0x0F];
            y[j + 16] = d * (float)kvalues_iq4nl[b[2 + j] >> 4];
        }
    }
}

/* ---- 256-value super-blocks (k-quants, IQ4_XS) ---------------------------------------- */

CLONES static void
deq_q2_k(const uint8_t *b, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++, b += 84, y += QK_K) {
        const uint8_t *sc = b, *qs = b + 16;
        const float d = H(b + 80), dmin = H(b + 82);
        for (int half = 0; half < 2; half++)
            for (int s = 0; s < 4; s++)
                for (int g = 0; g < 2; g++) {
                    const int k = half * 8 + s * 2 + g;
                    const float dl = d * (float)(sc[k] & 0x0F), ml = dmin * (float)(sc[k] >> 4);
                    float *out = y + half * 128 + s * 32 + g * 16;
                    const uint8_t *q = qs + half * 32 + g * 16;
                    for (int l = 0; l < 16; l++)
                        out[l] = dl * (float)((q[l] >> (2 * s)) & 3) - ml;
                }
    }
}

static inline int
q3_scale(const uint8_t *sc, int k)
{
    const int low = k < 8 ? (sc[k] & 0x0F) : (sc[k - 8] >> 4);
    const int high = (sc[8 + (k & 3)] >> (2 * (k >> 2))) & 3;
    return (low | (high << 4)) - 32;
}

CLONES static void
deq_q3_k(const uint8_t *b, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++, b += 110, y += QK_K) {
        const uint8_t *hmask = b, *qs = b + 32, *sc = b + 96;
        const float d = H(b + 108);
        for (int half = 0; half < 2; half++)
            for (int s = 0; s < 4; s++)
                for (int g = 0; g < 2; g++) {
                    const int k = half * 8 + s * 2 + g, bit = half * 4 + s;
                    const float dl = d * (float)q3_scale(sc, k);
                    float *out = y + half * 128 + s * 32 + g * 16;
                    for (int l = g * 16; l < g * 16 + 16; l++) {
                        const int q = ((qs[half * 32 + l] >> (2 * s)) & 3) - (((hmask[l] >> bit) & 1) ? 0 : 4);
                        out[l - g * 16] = dl * (float)q;
                    }
                }
    }
}

static inline void
k_scale_min(const uint8_t *s, int j, int *sc, int *mn)
{
    if (j < 4) {
        *sc = s[j] & 0x3F;
        *mn = s[j + 4] & 0x3F;
    } else {
        *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 2) & 0x30);
        *mn = (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30);
    }
}

/* One Q4_K or Q5_K super-block: d, dmin, 12 scale bytes, [32 bytes of high bits,] 128 bytes of nibbles. */
static inline void
k_block(const uint8_t *b, const uint8_t *qh, const uint8_t *qs, float *y)
{
    const float d = H(b), dmin = H(b + 2);
    for (int sb = 0; sb < 8; sb++) {
        int sc, mn;
        k_scale_min(b + 4, sb, &sc, &mn);
        const float dl = d * (float)sc, ml = dmin * (float)mn;
        const uint8_t *q = qs + (sb >> 1) * 32;
        const int shift = 4 * (sb & 1);
        for (int l = 0; l < 32; l++) {
            const int v = ((q[l] >> shift) & 0x0F) | (qh ? ((qh[l] >> sb) & 1) << 4 : 0);
            y[sb * 32 + l] = dl * (float)v - ml;
        }
    }
}

CLONES static void
deq_q4_k(const uint8_t *b, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++, b += 144, y += QK_K)
        k_block(b, NULL, b + 16, y);
}

CLONES static void
deq_q5_k(const uint8_t *b, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++, b += 176, y += QK_K)
        k_block(b, b + 16, b + 48, y);
}

CLONES static void
deq_q6_k(const uint8_t *b, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++, b += 210, y += QK_K) {
        const int8_t *sc = (const int8_t *)(b + 192);
        const float d = H(b + 208);
        float dl[16];
        for (int k = 0; k < 16; k++)
            dl[k] = d * (float)sc[k];
        for (int half = 0; half < 2; half++) {
            const uint8_t *ql = b + half * 64, *qh = b + 128 + half * 32;
            float *out = y + half * 128;
            const float *s = dl + half * 8;
            for (int g = 0; g < 2; g++) { /* 16 values share each scale */
                for (int l = g * 16; l < g * 16 + 16; l++) {
                    out[l] = s[g] * (float)((int)((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) - 32);
                    out[l + 32] = s[g + 2] * (float)((int)((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32);
                    out[l + 64] = s[g + 4] * (float)((int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                    out[l + 96] = s[g + 6] * (float)((int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
                }
            }
        }
    }
}

CLONES static void
deq_iq4_xs(const uint8_t *b, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++, b += 136, y += QK_K) {
        const float d = H(b);
        const unsigned scales_h = b[2] | (b[3] << 8);
        const uint8_t *scales_l = b + 4, *qs = b + 8;
        for (int k = 0; k < 8; k++) {
            const int ls = (scales_l[k >> 1] >> (4 * (k & 1))) & 0x0F, hs = (scales_h >> (2 * k)) & 3;
            const float dl = d * (float)((ls | (hs << 4)) - 32);
            for (int j = 0; j < 16; j++) {
                y[k * 32 + j] = dl * (float)kvalues_iq4nl[qs[k * 16 + j] & 0x0F];
                y[k * 32 + 16 + j] = dl * (float)kvalues_iq4nl[qs[k * 16 + j] >> 4];
            }
        }
    }
}

/* ---- dispatch ------------------------------------------------------------------------- */

typedef void (*decoder)(const uint8_t *, int64_t, float *);

typedef struct {
    int id, block, size;
    decoder fn;
} qtype;

static const qtype TYPES[] = {
    {2, 32, 18, deq_q4_0},     {3, 32, 20, deq_q4_1},      {6, 32, 22, deq_q5_0},
    {7, 32, 24, deq_q5_1},     {8, 32, 34, deq_q8_0},      {10, QK_K, 84, deq_q2_k},
    {11, QK_K, 110, deq_q3_k}, {12, QK_K, 144, deq_q4_k},  {13, QK_K, 176, deq_q5_k},
    {14, QK_K, 210, deq_q6_k}, {20, 32, 18, deq_iq4_nl},   {23, QK_K, 136, deq_iq4_xs},
};

static const qtype *
find_type(int id)
{
    for (size_t i = 0; i < sizeof(TYPES) / sizeof(TYPES[0]); i++)
        if (TYPES[i].id == id)
            return &TYPES[i];
    return NULL;
}

static PyObject *
dequantize(PyObject *self, PyObject *args)
{
    int id;
    PyObject *src_obj, *dst_obj;
    if (!PyArg_ParseTuple(args, "iOO", &id, &src_obj, &dst_obj))
        return NULL;
    const qtype *t = find_type(id);
    if (t == NULL)
        return PyErr_Format(PyExc_ValueError, "dequantize: type %d is not decoded here", id);
    Py_buffer src, dst;
    if (PyObject_GetBuffer(src_obj, &src, PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    if (PyObject_GetBuffer(dst_obj, &dst, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&src);
        return NULL;
    }
    const int64_t blocks = src.len / t->size;
    if (src.len % t->size != 0 || dst.len / 4 < blocks * t->block) {
        PyBuffer_Release(&src);
        PyBuffer_Release(&dst);
        return PyErr_Format(PyExc_ValueError, "dequantize: src must hold whole %d-byte blocks and dst room for "
                            "their %d values each (float32)", t->size, t->block);
    }
    Py_BEGIN_ALLOW_THREADS
    t->fn((const uint8_t *)src.buf, blocks, (float *)dst.buf);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&src);
    PyBuffer_Release(&dst);
    Py_RETURN_NONE;
}

static PyObject *
block_shape(PyObject *self, PyObject *args)
{
    int id;
    if (!PyArg_ParseTuple(args, "i", &id))
        return NULL;
    const qtype *t = find_type(id);
    if (t == NULL)
        Py_RETURN_NONE;
    return Py_BuildValue("(ii)", t->block, t->size);
}

static PyMethodDef methods[] = {
    {"dequantize", dequantize, METH_VARARGS, "dequantize(type_id, src, dst): real values of whole blocks."},
    {"block_shape", block_shape, METH_VARARGS, "block_shape(type_id) -> (block_size, type_size) or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_dequant", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__dequant(void)
{
    for (uint32_t h = 0; h < 65536; h++)
        f16_table[h] = half_to_float((uint16_t)h);
    return PyModule_Create(&module);
}
