/* hj212._speedups: the HJ 212 fast path's first step in C.
 *
 * Two functions, each the exact equivalent of Python code that stays the reference (and the fallback when
 * this extension is not built: hj212/frame.py):
 *
 *   state(data, state=0xFF) -> int
 *       hj212.frame._py_state: the CRC register's high byte after every byte of data (Appendix A up to its
 *       last step), one table lookup per byte.
 *
 *   common_packet(data: bytes) -> (qn, st, cn, pw, mn, flag, items) | None
 *       hj212.frame.common_packet_py: frame.single (length, CRC, CRLF), then packet.common_head and
 *       packet.cp_items of the data segment. None wherever the Python composition gives None, and also for
 *       anything outside printable ASCII (the Python path then decides): it never answers differently,
 *       only less often. tests/test_hj212_speedups.py checks both on generated, mutated and arbitrary inputs.
 *
 *   realtime_values(items, spec, keys) -> {sensor: float} | None
 *       hj212.decode.realtime_values_py: the values of a real-time packet's CP items for the logger's
 *       (value key, flag key, sensor) spec when every key is one of ``keys``, every value a number
 *       (hj212.packet.NUMBER) and every flag N or absent; None otherwise and for non-ASCII values.
 *
 *   frame_ack(qn, tail) -> bytes
 *       hj212.service.frame_ack_py: the framed 9014 ``QN=<qn>`` + its logger's tail.
 *
 * Why C: in a burst of 5,000 loggers on one core, the CRC loop, the header's regular expression and the CP
 * split were a fifth to a quarter of the server's CPU per packet (docs/benchmarks/hj212.md §6).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

static uint16_t TABLE[256]; /* Appendix A: the register after its eight shifts, by the byte XORed in */
static uint8_t HIGH[256];   /* TABLE's high byte: the state carried to the next byte */

static void
make_tables(void)
{
    for (unsigned x = 0; x < 256; x++) {
        unsigned crc = x;
        for (int i = 0; i < 8; i++)
            crc = (crc & 1) ? (crc >> 1) ^ 0xA001u : crc >> 1;
        TABLE[x] = (uint16_t)crc;
        HIGH[x] = (uint8_t)(crc >> 8);
    }
}

/* a dict sized for n items where CPython offers it (a private function, kept through 3.12), else a plain one */
static PyObject *
new_dict(Py_ssize_t n)
{
#if PY_VERSION_HEX < 0x030D0000
    return _PyDict_NewPresized(n);
#else
    (void)n;
    return PyDict_New();
#endif
}

static inline unsigned
run_state(const unsigned char *p, Py_ssize_t n, unsigned s)
{
    for (Py_ssize_t i = 0; i < n; i++)
        s = HIGH[s ^ p[i]];
    return s;
}

static PyObject *
speedups_state(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer buf;
    unsigned int s = 0xFF;
    if (!PyArg_ParseTuple(args, "y*|I:state", &buf, &s))
        return NULL;
    if (s > 0xFF) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "state is one byte (0..255)");
        return NULL;
    }
    s = run_state((const unsigned char *)buf.buf, buf.len, s);
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLong(s);
}

/* character classes of hj212/packet.py's patterns, restricted to ASCII */
static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static inline int
hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* _COMMON_HEAD's PW group: [!-%'-+\--:<>-~], printable ASCII without space & , ; = */
static inline int
is_pw(unsigned char c)
{
    return c >= '!' && c <= '~' && c != '&' && c != ',' && c != ';' && c != '=';
}

/* MN and CP keys: [0-9A-Za-z_-] */
static inline int
is_word(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == '-';
}

/* a CP value's [^;,&=], here within printable ASCII (space included) */
static inline int
is_value(unsigned char c)
{
    return c >= ' ' && c <= '~' && c != ';' && c != ',' && c != '&' && c != '=';
}

/* "<name>=" then a run of class characters, min..max of them, then ';'. Returns the run's start and sets
 * *end past the ';', or -1. The run cannot hold ';' (no class has it), so the first ';' ends it, as the
 * regular expression's match would. */
static Py_ssize_t
field(const unsigned char *s, Py_ssize_t n, Py_ssize_t at, const char *name, int (*cls)(unsigned char),
      Py_ssize_t min, Py_ssize_t max, Py_ssize_t *end)
{
    size_t k = strlen(name);
    if (at + (Py_ssize_t)k > n || memcmp(s + at, name, k) != 0)
        return -1;
    Py_ssize_t start = at + (Py_ssize_t)k, i = start;
    while (i < n && i - start <= max && cls(s[i]))
        i++;
    if (i - start < min || i - start > max || i >= n || s[i] != ';')
        return -1;
    *end = i + 1;
    return start;
}

/* s[a:b] as a str; the caller checked that it is ASCII */
static PyObject *
text(const unsigned char *s, Py_ssize_t a, Py_ssize_t b)
{
    PyObject *t = PyUnicode_New(b - a, 127);
    if (t != NULL)
        memcpy(PyUnicode_1BYTE_DATA(t), s + a, (size_t)(b - a));
    return t;
}

/* The CP keys of a park's loggers are a few hundred names ("a21026-ZsRtd", "DataTime", ...) and most flags are
 * one letter: a direct-mapped table of their str objects (bounded: a slot is replaced on collision) gives the
 * same str again, its hash already computed, instead of a new one per item. */
#define CACHE_SLOTS 4096
#define CACHE_MAX_LEN 64
static PyObject *cache[CACHE_SLOTS];

static PyObject *
cached_text(const unsigned char *s, Py_ssize_t a, Py_ssize_t b)
{
    Py_ssize_t n = b - a;
    if (n > CACHE_MAX_LEN)
        return text(s, a, b);
    uint32_t h = 2166136261u; /* FNV-1a */
    for (Py_ssize_t i = a; i < b; i++)
        h = (h ^ s[i]) * 16777619u;
    PyObject **slot = &cache[h & (CACHE_SLOTS - 1)];
    PyObject *t = *slot;
    if (t != NULL && PyUnicode_GET_LENGTH(t) == n && memcmp(PyUnicode_1BYTE_DATA(t), s + a, (size_t)n) == 0) {
        Py_INCREF(t);
        return t;
    }
    t = text(s, a, b);
    if (t == NULL)
        return NULL;
    if (PyObject_Hash(t) == -1) {
        Py_DECREF(t);
        return NULL;
    }
    Py_XSETREF(*slot, t);
    Py_INCREF(t);
    return t;
}

static PyObject *
speedups_common_packet(PyObject *self, PyObject *arg)
{
    (void)self;
    if (!PyBytes_Check(arg))
        Py_RETURN_NONE;
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);

    /* frame.single: ## + four digits + segment + four hex digits + CRLF, the length and the CRC right */
    if (n < 12 || d[0] != '#' || d[1] != '#' || d[n - 2] != '\r' || d[n - 1] != '\n')
        Py_RETURN_NONE;
    Py_ssize_t len = 0;
    for (int i = 2; i < 6; i++) {
        if (!is_digit(d[i]))
            Py_RETURN_NONE;
        len = len * 10 + (d[i] - '0');
    }
    if (len + 12 != n)
        Py_RETURN_NONE;
    unsigned got = 0;
    for (Py_ssize_t i = n - 6; i < n - 2; i++) {
        int h = hex_value(d[i]);
        if (h < 0)
            Py_RETURN_NONE;
        got = got * 16 + (unsigned)h;
    }
    const unsigned char *s = d + 6; /* the data segment, len bytes */
    if (len == 0)
        Py_RETURN_NONE; /* CRC FFFF of nothing: no header either, the general path refuses it */
    if (got != TABLE[run_state(s, len - 1, 0xFF) ^ s[len - 1]])
        Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < len; i++)
        if (s[i] < ' ' || s[i] > '~')
            Py_RETURN_NONE; /* not printable ASCII: the Python path decides (UTF-8, control characters) */

    /* packet.common_head: QN, ST, CN, PW, MN, Flag in the standard's order, then CP=&&...&& */
    Py_ssize_t at = 0, qn, st, cn, pw, mn, fl, qn_end, st_end, cn_end, pw_end, mn_end, fl_end;
    if ((qn = field(s, len, at, "QN=", is_digit, 14, 20, &qn_end)) < 0
        || (st = field(s, len, qn_end, "ST=", is_digit, 2, 2, &st_end)) < 0
        || (cn = field(s, len, st_end, "CN=", is_digit, 4, 4, &cn_end)) < 0
        || (pw = field(s, len, cn_end, "PW=", is_pw, 0, 9, &pw_end)) < 0
        || (mn = field(s, len, pw_end, "MN=", is_word, 1, 32, &mn_end)) < 0
        || (fl = field(s, len, mn_end, "Flag=", is_digit, 1, 4, &fl_end)) < 0)
        Py_RETURN_NONE;
    at = fl_end;
    if (len < at + 7 || memcmp(s + at, "CP=&&", 5) != 0 || s[len - 2] != '&' || s[len - 1] != '&')
        Py_RETURN_NONE;
    long flag = 0;
    for (Py_ssize_t i = fl; i < fl_end - 1; i++)
        flag = flag * 10 + (s[i] - '0');
    if (flag > 255 || (flag & 0x02))
        Py_RETURN_NONE;

    /* packet.cp_items: item ((',' | ';') item)*, item = key{1,64} '=' value*; no empty group */
    Py_ssize_t b = at + 5, e = len - 2; /* the CP's content */
    if (b >= e)
        Py_RETURN_NONE;
    Py_ssize_t count = 1;
    for (Py_ssize_t j = b; j < e; j++)
        count += s[j] == ',' || s[j] == ';';
    PyObject *items = new_dict(count);
    if (items == NULL)
        return NULL;
    Py_ssize_t i = b;
    for (;;) {
        Py_ssize_t k0 = i;
        while (i < e && i - k0 <= 64 && is_word(s[i]))
            i++;
        if (i == k0 || i - k0 > 64 || i >= e || s[i] != '=')
            goto none;
        Py_ssize_t k1 = i++;
        Py_ssize_t v0 = i;
        while (i < e && is_value(s[i]))
            i++;
        PyObject *key = cached_text(s, k0, k1);
        PyObject *value = key == NULL ? NULL : (i - v0 <= 1 ? cached_text(s, v0, i) : text(s, v0, i));
        if (value == NULL || PyDict_SetItem(items, key, value) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(value);
            Py_DECREF(items);
            return NULL;
        }
        Py_DECREF(key);
        Py_DECREF(value);
        if (i == e)
            break;
        if (s[i] != ',' && s[i] != ';')
            goto none; /* '&' or '=' inside a value */
        i++;
        if (i == e)
            goto none; /* a trailing separator: an empty group or item */
    }

    PyObject *out = PyTuple_New(7);
    if (out == NULL) {
        Py_DECREF(items);
        return NULL;
    }
    const Py_ssize_t spans[5][2] = {{qn, qn_end - 1}, {st, st_end - 1}, {cn, cn_end - 1}, {pw, pw_end - 1},
                                    {mn, mn_end - 1}};
    for (int j = 0; j < 5; j++) {
        PyObject *t = text(s, spans[j][0], spans[j][1]);
        if (t == NULL) {
            Py_DECREF(items);
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, j, t);
    }
    PyObject *f = PyLong_FromLong(flag);
    if (f == NULL) {
        Py_DECREF(items);
        Py_DECREF(out);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 5, f);
    PyTuple_SET_ITEM(out, 6, items);
    return out;

none:
    Py_DECREF(items);
    Py_RETURN_NONE;
}

/* hj212.packet.NUMBER's fullmatch, [+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?, on ASCII text */
static int
is_number(const char *t, Py_ssize_t n)
{
    Py_ssize_t i = 0, digits = 0;
    if (i < n && (t[i] == '+' || t[i] == '-'))
        i++;
    while (i < n && is_digit((unsigned char)t[i]))
        i++, digits++;
    if (i < n && t[i] == '.') {
        i++;
        while (i < n && is_digit((unsigned char)t[i]))
            i++, digits++;
    }
    if (digits == 0)
        return 0; /* neither "5", "5." nor ".5" */
    if (i < n && (t[i] == 'e' || t[i] == 'E')) {
        i++;
        if (i < n && (t[i] == '+' || t[i] == '-'))
            i++;
        Py_ssize_t e0 = i;
        while (i < n && is_digit((unsigned char)t[i]))
            i++;
        if (i == e0)
            return 0;
    }
    return i == n;
}

static PyObject *
speedups_realtime_values(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *items, *spec, *keys;
    if (!PyArg_ParseTuple(args, "O!O!O!:realtime_values", &PyDict_Type, &items, &PyTuple_Type, &spec,
                          &PyFrozenSet_Type, &keys))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(spec);
    if (n == 0)
        Py_RETURN_NONE;
    /* items.keys() <= keys */
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(items, &pos, &k, &v)) {
        int in = PySet_Contains(keys, k);
        if (in < 0)
            return NULL;
        if (!in)
            Py_RETURN_NONE;
    }
    PyObject *values = new_dict(n);
    if (values == NULL)
        return NULL;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *entry = PyTuple_GET_ITEM(spec, j);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 3) {
            Py_DECREF(values);
            PyErr_SetString(PyExc_TypeError, "spec: (value key, flag key, sensor) tuples");
            return NULL;
        }
        PyObject *value = PyDict_GetItemWithError(items, PyTuple_GET_ITEM(entry, 0));
        PyObject *flag = value == NULL ? NULL : PyDict_GetItemWithError(items, PyTuple_GET_ITEM(entry, 1));
        if (PyErr_Occurred()) {
            Py_DECREF(values);
            return NULL;
        }
        if (value == NULL || !PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value))
            goto none; /* missing, or text that only the Python path reads (non-ASCII digits) */
        if (flag != NULL) {
            if (!PyUnicode_CheckExact(flag))
                goto none;
            Py_ssize_t fn = PyUnicode_GET_LENGTH(flag);
            if (fn != 0 && (fn != 1 || PyUnicode_READ_CHAR(flag, 0) != 'N'))
                goto none; /* `flag and flag != "N"` */
        }
        const char *t = (const char *)PyUnicode_1BYTE_DATA(value);
        Py_ssize_t tn = PyUnicode_GET_LENGTH(value);
        if (!is_number(t, tn))
            goto none;
        double x = PyOS_string_to_double(t, NULL, NULL); /* float(value): the whole text is the number */
        if (x == -1.0 && PyErr_Occurred()) {
            Py_DECREF(values);
            return NULL;
        }
        PyObject *f = PyFloat_FromDouble(x);
        if (f == NULL || PyDict_SetItem(values, PyTuple_GET_ITEM(entry, 2), f) < 0) {
            Py_XDECREF(f);
            Py_DECREF(values);
            return NULL;
        }
        Py_DECREF(f);
    }
    return values;

none:
    Py_DECREF(values);
    Py_RETURN_NONE;
}

/* frame(b"QN=" + qn.encode() + tail) in one allocation: the 9014 of a packet, whose tail is its logger's */
static PyObject *
speedups_frame_ack(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *qn;
    Py_buffer tail;
    if (!PyArg_ParseTuple(args, "Uy*:frame_ack", &qn, &tail))
        return NULL;
    Py_ssize_t qn_len;
    const char *q = PyUnicode_AsUTF8AndSize(qn, &qn_len);
    if (q == NULL) {
        PyBuffer_Release(&tail);
        return NULL;
    }
    Py_ssize_t seg = 3 + qn_len + tail.len;
    if (seg > 9988) {
        PyBuffer_Release(&tail);
        return PyErr_Format(PyExc_ValueError, "data segment of %zd bytes exceeds 9988", seg);
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, seg + 12);
    if (out == NULL) {
        PyBuffer_Release(&tail);
        return NULL;
    }
    unsigned char *o = (unsigned char *)PyBytes_AS_STRING(out);
    o[0] = o[1] = '#';
    o[2] = (unsigned char)('0' + seg / 1000);
    o[3] = (unsigned char)('0' + seg / 100 % 10);
    o[4] = (unsigned char)('0' + seg / 10 % 10);
    o[5] = (unsigned char)('0' + seg % 10);
    unsigned char *sg = o + 6;
    memcpy(sg, "QN=", 3);
    memcpy(sg + 3, q, (size_t)qn_len);
    memcpy(sg + 3 + qn_len, tail.buf, (size_t)tail.len);
    PyBuffer_Release(&tail);
    unsigned crc = TABLE[run_state(sg, seg - 1, 0xFF) ^ sg[seg - 1]];
    static const char HEX[] = "0123456789ABCDEF";
    unsigned char *c = sg + seg;
    c[0] = (unsigned char)HEX[(crc >> 12) & 15];
    c[1] = (unsigned char)HEX[(crc >> 8) & 15];
    c[2] = (unsigned char)HEX[(crc >> 4) & 15];
    c[3] = (unsigned char)HEX[crc & 15];
    c[4] = '\r';
    c[5] = '\n';
    return out;
}

static PyMethodDef methods[] = {
    {"state", speedups_state, METH_VARARGS,
     "state(data, state=0xFF) -> the HJ 212 CRC register's high byte after data (hj212.frame._py_state)"},
    {"common_packet", speedups_common_packet, METH_O,
     "common_packet(data) -> (qn, st, cn, pw, mn, flag, items) or None (hj212.frame.common_packet_py)"},
    {"realtime_values", speedups_realtime_values, METH_VARARGS,
     "realtime_values(items, spec, keys) -> {sensor: float} or None (hj212.decode.realtime_values_py)"},
    {"frame_ack", speedups_frame_ack, METH_VARARGS,
     "frame_ack(qn, tail) -> frame(b'QN=' + qn.encode() + tail) (hj212.service.frame_ack_py)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "hj212._speedups", "The HJ 212 fast path's framing and header in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    make_tables();
    return PyModule_Create(&module);
}
