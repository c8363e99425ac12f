/* smartpark._speedups: the decoder's snapshot validation and line formatting in C.
 *
 * One function, the exact equivalent of Python code that stays the reference (and the fallback when this
 * extension is not built: smartpark/decode.py):
 *
 *   simple_snapshot(sensors, values, ts, quality) -> [line, ...] | None
 *       smartpark.decode._simple_snapshot_py: the ``reading`` lines of a snapshot's values when every one is
 *       a known sensor's finite float within its range, else None. ``sensors`` maps a sensor id to its
 *       ``_Known`` (a named tuple: ref, lo, hi, line prefix). The values' texts are orjson's (one
 *       ``orjson.dumps`` of the list of floats, split at its commas, exactly as the reference does), so the
 *       lines are the same bytes. tests/test_decode_speedups.py compares the two on generated inputs.
 *
 * Why C: every snapshot the collector takes (MQTT) and every real-time packet of an HJ 212 logger passes
 * here; in a burst of 5,000 loggers on one core the Python loop, split and f-strings were 3.6 us of a
 * packet's 32 (docs/benchmarks/hj212.md §7).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

static PyObject *DUMPS; /* orjson.dumps */

/* ``lo <= raw <= hi`` as Python compares them (the bounds are floats, or ints from the park's YAML) */
static int
within(PyObject *lo, PyObject *hi, PyObject *raw, double v)
{
    int r;
    if (PyFloat_CheckExact(lo)) {
        if (!(PyFloat_AS_DOUBLE(lo) <= v))
            return 0;
    } else if ((r = PyObject_RichCompareBool(lo, raw, Py_LE)) <= 0) {
        return r;
    }
    if (PyFloat_CheckExact(hi))
        return v <= PyFloat_AS_DOUBLE(hi);
    return PyObject_RichCompareBool(raw, hi, Py_LE);
}

/* prefix + the value's text + tail, as one str (ASCII written directly; anything else joined by Python) */
static PyObject *
line_of(PyObject *prefix, const char *text, Py_ssize_t n, PyObject *tail)
{
    if (PyUnicode_IS_ASCII(prefix) && PyUnicode_IS_ASCII(tail)) {
        Py_ssize_t a = PyUnicode_GET_LENGTH(prefix), c = PyUnicode_GET_LENGTH(tail);
        PyObject *out = PyUnicode_New(a + n + c, 127);
        if (out == NULL)
            return NULL;
        Py_UCS1 *p = PyUnicode_1BYTE_DATA(out);
        memcpy(p, PyUnicode_1BYTE_DATA(prefix), a);
        memcpy(p + a, text, n);
        memcpy(p + a + n, PyUnicode_1BYTE_DATA(tail), c);
        return out;
    }
    PyObject *mid = PyUnicode_FromStringAndSize(text, n);
    if (mid == NULL)
        return NULL;
    PyObject *head = PyUnicode_Concat(prefix, mid);
    Py_DECREF(mid);
    if (head == NULL)
        return NULL;
    PyObject *out = PyUnicode_Concat(head, tail);
    Py_DECREF(head);
    return out;
}

static PyObject *
speedups_simple_snapshot(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "simple_snapshot expected 4 arguments, got %zd", nargs);
        return NULL;
    }
    PyObject *sensors = args[0], *values = args[1], *ts = args[2], *quality = args[3];
    if (!PyDict_Check(sensors) || !PyDict_Check(values)) {
        PyErr_SetString(PyExc_TypeError, "simple_snapshot: sensors and values must be dicts");
        return NULL;
    }
    Py_ssize_t n = PyDict_GET_SIZE(values);
    PyObject *prefixes = PyList_New(n), *floats = PyList_New(n), *result = NULL, *tail = NULL, *dumped = NULL;
    if (prefixes == NULL || floats == NULL)
        goto done;
    Py_ssize_t pos = 0, i = 0;
    PyObject *name, *raw;
    while (PyDict_Next(values, &pos, &name, &raw)) {
        if (i >= n) { /* the dict grew meanwhile (a key's __eq__ cannot, with str keys; guard anyway) */
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
            goto done;
        }
        Py_INCREF(name);
        Py_INCREF(raw);
        PyObject *known = PyDict_GetItemWithError(sensors, name); /* borrowed */
        Py_DECREF(name);
        if (known == NULL) {
            Py_DECREF(raw);
            if (!PyErr_Occurred()) {
                result = Py_None;
                Py_INCREF(result);
            }
            goto done;
        }
        if (!PyTuple_Check(known) || PyTuple_GET_SIZE(known) != 4 || !PyUnicode_Check(PyTuple_GET_ITEM(known, 3))) {
            Py_DECREF(raw);
            PyErr_SetString(PyExc_TypeError, "simple_snapshot: a sensor's entry is not a _Known (ref, lo, hi, line)");
            goto done;
        }
        int ok = 0;
        if (PyFloat_CheckExact(raw)) {
            double v = PyFloat_AS_DOUBLE(raw);
            ok = isfinite(v) ? within(PyTuple_GET_ITEM(known, 1), PyTuple_GET_ITEM(known, 2), raw, v) : 0;
        }
        if (ok <= 0) {
            Py_DECREF(raw);
            if (ok == 0) {
                result = Py_None;
                Py_INCREF(result);
            }
            goto done;
        }
        PyObject *line = PyTuple_GET_ITEM(known, 3);
        Py_INCREF(line);
        PyList_SET_ITEM(prefixes, i, line);
        PyList_SET_ITEM(floats, i, raw); /* the reference taken above */
        i++;
    }
    if (i != n) {
        PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
        goto done;
    }
    if (n == 0) {
        result = PyList_New(0);
        goto done;
    }
    if (quality == Py_None || (PyUnicode_Check(quality) && PyUnicode_CompareWithASCIIString(quality, "good") == 0))
        tail = PyUnicode_FromFormat(" %S", ts);
    else
        tail = PyUnicode_FromFormat(",quality=\"%S\" %S", quality, ts);
    if (tail == NULL)
        goto done;
    dumped = PyObject_CallOneArg(DUMPS, floats);
    if (dumped == NULL)
        goto done;
    if (!PyBytes_Check(dumped)) {
        PyErr_SetString(PyExc_TypeError, "orjson.dumps did not return bytes");
        goto done;
    }
    const char *text = PyBytes_AS_STRING(dumped), *end = text + PyBytes_GET_SIZE(dumped) - 1; /* at ']' */
    const char *p = text + 1;                                                                /* past '[' */
    PyObject *lines = PyList_New(n);
    if (lines == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < n; k++) {
        const char *comma = k + 1 < n ? memchr(p, ',', end - p) : end;
        if (comma == NULL)
            comma = end;
        PyObject *one = line_of(PyList_GET_ITEM(prefixes, k), p, comma - p, tail);
        if (one == NULL) {
            Py_DECREF(lines);
            goto done;
        }
        PyList_SET_ITEM(lines, k, one);
        p = comma + 1;
    }
    result = lines;
done:
    Py_XDECREF(prefixes);
    if (floats != NULL) {
        /* a list cut short (None, an error): the unset slots are NULL, which list_dealloc skips */
        Py_DECREF(floats);
    }
    Py_XDECREF(tail);
    Py_XDECREF(dumped);
    return result;
}

static PyMethodDef methods[] = {
    {"simple_snapshot", (PyCFunction)(void (*)(void))speedups_simple_snapshot, METH_FASTCALL,
     "simple_snapshot(sensors, values, ts, quality) -> lines or None (smartpark.decode._simple_snapshot_py)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "smartpark._speedups", "The decoder's snapshot lines in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *orjson = PyImport_ImportModule("orjson");
    if (orjson == NULL)
        return NULL;
    DUMPS = PyObject_GetAttrString(orjson, "dumps");
    Py_DECREF(orjson);
    if (DUMPS == NULL)
        return NULL;
    return PyModule_Create(&module);
}
