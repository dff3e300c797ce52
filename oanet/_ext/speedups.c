/* Hot loops of oanet's PNG reading and PQ evaluation (oanet/data/png_io.py, oanet/evaluation/pq.py).
 *
 * Python inflates a PNG's IDAT stream (zlib-ng); these functions undo the PNG row filters of an 8-bit
 * RGB or RGBA non-interlaced image one line at a time, into two line buffers that stay in cache, and
 * either write each pixel's panoptic id (R + 256 G + 256^2 B) or, for a GT and a predicted image at
 * once, count the pixels of every (GT segment, predicted segment) pair without ever building an id map:
 * no image-sized buffer is allocated (fresh pages of large buffers cost more than decoding them).
 * Python checks the PNG header and leaves every other format to pyspng/Pillow. Buffers come in through
 * the buffer protocol, so no numpy headers are needed to build this; the GIL is released in the loops.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { FILTER_NONE, FILTER_SUB, FILTER_UP, FILTER_AVERAGE, FILTER_PAETH };

/* Pixels that the fast paths below test and copy at once; runs in label maps are mostly longer. */
#define BLOCK 8
static const uint8_t zeros[BLOCK * 4];

static inline int paeth_predictor(int a, int b, int c)
{
    /* PNG spec 9.4: the neighbour (left a, up b, up-left c) closest to a + b - c, ties in that order.
     * Written with selects, not branches: on label maps the winner changes unpredictably. */
    int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
    int b_or_c = pb <= pc ? b : c;
    return pa <= (pb <= pc ? pb : pc) ? a : b_or_c;
}

/* Reconstructs one scanline: cur = filtered bytes + prediction from the left pixel and `prev` (the
 * previous reconstructed line, zeros above the first). Returns 0, or -1 for an unknown filter type.
 * `bpp` is a constant at each call site (3 or 4), so the channel loops unroll and the left pixel stays
 * in registers: Sub, Average and Paeth chain each byte to its left neighbour, and reading that back from
 * memory would cost a store-to-load round trip per byte. */
static inline int unfilter_line(uint8_t *cur, const uint8_t *prev, const uint8_t *filtered, Py_ssize_t n,
                                const int bpp, int filter)
{
    Py_ssize_t i;
    int k, left[4] = {0, 0, 0, 0};
    switch (filter) {
    case FILTER_NONE:
        memcpy(cur, filtered, (size_t)n);
        break;
    case FILTER_UP: /* no chain: vectorised by the compiler */
        for (i = 0; i < n; i++)
            cur[i] = (uint8_t)(filtered[i] + prev[i]);
        break;
    case FILTER_SUB:
        for (i = 0; i < n; i += bpp)
            for (k = 0; k < bpp; k++)
                cur[i + k] = (uint8_t)(left[k] = (uint8_t)(filtered[i + k] + left[k]));
        break;
    case FILTER_AVERAGE:
        for (i = 0; i < n; i += bpp)
            for (k = 0; k < bpp; k++)
                cur[i + k] = (uint8_t)(left[k] = (uint8_t)(filtered[i + k] + ((left[k] + prev[i + k]) >> 1)));
        break;
    case FILTER_PAETH:
        for (k = 0; k < bpp; k++) /* the first pixel has no left neighbours (a = c = 0): it predicts up */
            cur[k] = (uint8_t)(left[k] = (uint8_t)(filtered[k] + prev[k]));
        for (i = bpp; i < n;) {
            if (i + BLOCK * bpp <= n && memcmp(filtered + i, zeros, BLOCK * bpp) == 0 &&
                memcmp(prev + i, prev + i - bpp, BLOCK * bpp) == 0) {
                /* Inside a segment of a label map, most pixels: the line above repeats its pixels
                 * (up == up-left, so Paeth predicts the left pixel) and the residuals are 0, so the
                 * BLOCK pixels repeat the left one (and `left` stays what it is). */
                for (Py_ssize_t j = 0; j < BLOCK * bpp; j += bpp)
                    for (k = 0; k < bpp; k++)
                        cur[i + j + k] = (uint8_t)left[k];
                i += BLOCK * bpp;
                continue;
            }
            if (memcmp(prev + i, prev + i - bpp, (size_t)bpp) == 0) {
                /* up == up-left: |p - a| = |b - c| = 0, the prediction is the left pixel. Taking this
                 * branch, rather than the selects below, keeps the chain from pixel to pixel one add long. */
                for (k = 0; k < bpp; k++)
                    cur[i + k] = (uint8_t)(left[k] = (uint8_t)(filtered[i + k] + left[k]));
            } else {
                for (k = 0; k < bpp; k++)
                    cur[i + k] = (uint8_t)(left[k] = (uint8_t)(filtered[i + k] +
                                                               paeth_predictor(left[k], prev[i + k], prev[i + k - bpp])));
            }
            i += bpp;
        }
        break;
    default:
        return -1;
    }
    return 0;
}

static inline uint32_t pixel_id(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16);
}

/* An image's scanlines, reconstructed one line at a time into two buffers that stay in cache. */
typedef struct {
    const uint8_t *data; /* inflated: per line a filter byte and width * bpp bytes */
    Py_ssize_t width, height, stride, y;
    int bpp;
    uint8_t *prev, *cur; /* the last two reconstructed lines (prev: zeros above the first line) */
} Lines;

static int lines_open(Lines *lines, const uint8_t *data, Py_ssize_t width, Py_ssize_t height, int bpp)
{
    Py_ssize_t stride = width * bpp;
    uint8_t *buffers = calloc(2, (size_t)stride);
    *lines = (Lines){.data = data, .width = width, .height = height, .stride = stride, .bpp = bpp,
                     .prev = buffers, .cur = buffers ? buffers + stride : NULL};
    return buffers ? 0 : -1;
}

static void lines_close(Lines *lines)
{
    free(lines->prev < lines->cur ? lines->prev : lines->cur);
}

/* Reconstructs the next line into lines->cur. Returns 1 if it equals the line before, 0 if not (or it is
 * the first line), -1 for an invalid filter byte (lines->y is then that line). */
static int lines_next(Lines *lines)
{
    uint8_t *swap = lines->prev;
    lines->prev = lines->cur;
    lines->cur = swap;
    const uint8_t *line = lines->data + lines->y * (lines->stride + 1);
    int status = lines->bpp == 3 ? unfilter_line(lines->cur, lines->prev, line + 1, lines->stride, 3, line[0])
                                 : unfilter_line(lines->cur, lines->prev, line + 1, lines->stride, 4, line[0]);
    if (status < 0)
        return -1;
    return lines->y++ > 0 && memcmp(lines->cur, lines->prev, (size_t)lines->stride) == 0;
}

/* Whether the BLOCK pixels from x on all equal pixel x - 1: then every byte equals the one a pixel to
 * its left, which one memcmp tells. */
static inline int block_repeats_left(const uint8_t *line, Py_ssize_t x, Py_ssize_t width, const int bpp)
{
    return x > 0 && x + BLOCK <= width && memcmp(line + x * bpp, line + (x - 1) * bpp, BLOCK * bpp) == 0;
}

/* Ids of one reconstructed line. */
static inline void line_ids(const uint8_t *line, Py_ssize_t width, const int bpp, uint32_t *ids)
{
    for (Py_ssize_t x = 0, j; x < width;) {
        if (block_repeats_left(line, x, width, bpp)) {
            for (j = 0; j < BLOCK; j++)
                ids[x + j] = ids[x - 1];
            x += BLOCK;
        } else {
            ids[x] = pixel_id(line + x * bpp);
            x++;
        }
    }
}

/* Segment id -> row: 0 for VOID, 1 + the position in the declared ids (ascending) otherwise. The last
 * answer is kept: neighbouring pixels mostly share their id, so few lookups search. */
typedef struct {
    const uint32_t *keys;
    Py_ssize_t n_keys;
    uint32_t last_id; /* starts at 0 (VOID), whose row is 0 */
    uint16_t last_row;
    int undeclared; /* an id not in keys was seen */
} RowLookup;

static uint16_t search_row(RowLookup *lookup, uint32_t id)
{
    Py_ssize_t lo = 0, hi = lookup->n_keys;
    if (id == 0)
        return 0;
    while (lo < hi) { /* first key >= id */
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (lookup->keys[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < lookup->n_keys && lookup->keys[lo] == id)
        return (uint16_t)(lo + 1);
    lookup->undeclared = 1;
    return 0;
}

static inline uint16_t row_of(RowLookup *lookup, const uint8_t *pixel)
{
    uint32_t id = pixel_id(pixel);
    if (id != lookup->last_id) {
        lookup->last_id = id;
        lookup->last_row = search_row(lookup, id);
    }
    return lookup->last_row;
}

/* A run of pixels with one (GT row, predicted row) pair along a line. */
typedef struct {
    uint16_t gt, pred;
    Py_ssize_t length;
} Run;

/* The runs of one pair of reconstructed lines into `runs` (room for width); returns how many. */
static inline Py_ssize_t line_runs(const uint8_t *gt_line, const uint8_t *pred_line, Py_ssize_t width,
                                   const int gt_bpp, const int pred_bpp, RowLookup *gt, RowLookup *pred,
                                   Run *runs)
{
    Py_ssize_t n = 0;
    for (Py_ssize_t x = 0; x < width;) {
        if (block_repeats_left(gt_line, x, width, gt_bpp) && block_repeats_left(pred_line, x, width, pred_bpp)) {
            runs[n - 1].length += BLOCK; /* x > 0, so a run is open */
            x += BLOCK;
            continue;
        }
        uint16_t g = row_of(gt, gt_line + x * gt_bpp), p = row_of(pred, pred_line + x * pred_bpp);
        if (n > 0 && runs[n - 1].gt == g && runs[n - 1].pred == p)
            runs[n - 1].length++;
        else
            runs[n++] = (Run){g, p, 1};
        x++;
    }
    return n;
}

static void add_runs(const Run *runs, Py_ssize_t n, Py_ssize_t times, int64_t *counts, Py_ssize_t n_columns)
{
    for (Py_ssize_t k = 0; k < n; k++)
        counts[runs[k].gt * n_columns + runs[k].pred] += runs[k].length * times;
}

/* Counts (GT row, predicted row) pairs line by line. A pair of lines equal to the pair above has the same
 * runs (in label maps, most lines): it only repeats them. Returns 0, -1 (invalid filter byte: *bad is
 * the image, 0 GT or 1 prediction) or -2 (out of memory). Stops early at an undeclared id. */
static int count_pairs(Lines *gt_lines, Lines *pred_lines, RowLookup *gt, RowLookup *pred, int64_t *counts,
                       Py_ssize_t n_columns, int *bad)
{
    Py_ssize_t width = gt_lines->width, n_runs = 0, times = 0, y;
    Run *runs = malloc((size_t)width * sizeof(Run));
    if (!runs)
        return -2;
    for (y = 0; y < gt_lines->height && !gt->undeclared && !pred->undeclared; y++) {
        int gt_same = lines_next(gt_lines), pred_same = lines_next(pred_lines);
        if (gt_same < 0 || pred_same < 0) {
            *bad = gt_same < 0 ? 0 : 1;
            free(runs);
            return -1;
        }
        if (gt_same && pred_same) {
            times++;
            continue;
        }
        add_runs(runs, n_runs, times, counts, n_columns);
        if (gt_lines->bpp == 3 && pred_lines->bpp == 3) /* constants: the usual case, compiled for RGB */
            n_runs = line_runs(gt_lines->cur, pred_lines->cur, width, 3, 3, gt, pred, runs);
        else
            n_runs = line_runs(gt_lines->cur, pred_lines->cur, width, gt_lines->bpp, pred_lines->bpp, gt, pred,
                               runs);
        times = 1;
    }
    add_runs(runs, n_runs, times, counts, n_columns);
    free(runs);
    return 0;
}

/* Checks the inflated data of one image; returns 0 or -1 with ValueError(which, message) set. */
static int check_scanlines(int which, Py_buffer *data, Py_ssize_t width, Py_ssize_t height, int channels)
{
    const char *problem = NULL;
    char message[120];
    if (channels != 3 && channels != 4)
        problem = "channels must be 3 (RGB) or 4 (RGBA)";
    else if (width <= 0 || height <= 0 || width > PY_SSIZE_T_MAX / 8 / height)
        problem = "bad image size";
    else if (data->len < height * (1 + width * channels)) { /* more is tolerated, as libpng does */
        PyOS_snprintf(message, sizeof(message), "truncated image data (%zd of %zd bytes)", data->len,
                      height * (1 + width * channels));
        problem = message;
    }
    if (problem)
        PyErr_SetObject(PyExc_ValueError, Py_BuildValue("(is)", which, problem));
    return problem ? -1 : 0;
}

static void set_filter_error(int which, Lines *lines)
{
    char message[80];
    const uint8_t *line = lines->data + lines->y * (lines->stride + 1);
    PyOS_snprintf(message, sizeof(message), "invalid filter type %d on line %zd", line[0], lines->y);
    PyErr_SetObject(PyExc_ValueError, Py_BuildValue("(is)", which, message));
}

PyDoc_STRVAR(scanlines_to_ids_doc,
"scanlines_to_ids(data, width, height, channels, out)\n--\n\n"
"Undo the PNG filters of inflated 8-bit RGB(A) scanlines and write each pixel's id\n"
"R + 256 G + 256^2 B into `out` (a writable uint32 buffer of width*height).\n"
"ValueError(0, message) on truncated data or an invalid filter byte.");

static PyObject *scanlines_to_ids(PyObject *self, PyObject *args)
{
    Py_buffer data, out;
    Py_ssize_t width, height, y;
    int channels, status = 0;
    Lines lines;
    if (!PyArg_ParseTuple(args, "y*nniw*", &data, &width, &height, &channels, &out))
        return NULL;
    if (check_scanlines(0, &data, width, height, channels) < 0)
        goto done;
    if (out.len != width * height * (Py_ssize_t)sizeof(uint32_t)) {
        PyErr_SetString(PyExc_TypeError, "out must be a uint32 buffer of width * height");
        goto done;
    }
    if (lines_open(&lines, data.buf, width, height, channels) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    uint32_t *ids = out.buf;
    for (y = 0; y < height && status >= 0; y++) {
        status = lines_next(&lines);
        if (status == 1) /* same line as above: same ids */
            memcpy(ids + y * width, ids + (y - 1) * width, (size_t)width * sizeof(uint32_t));
        else if (status == 0 && channels == 3)
            line_ids(lines.cur, width, 3, ids + y * width);
        else if (status == 0)
            line_ids(lines.cur, width, 4, ids + y * width);
    }
    Py_END_ALLOW_THREADS
    if (status < 0)
        set_filter_error(0, &lines);
    lines_close(&lines);
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(pair_counts_doc,
"pair_counts(gt_data, gt_channels, gt_ids, pred_data, pred_channels, pred_ids, width, height, counts) -> bool\n"
"--\n\n"
"Add to `counts` (int64, (1 + len(gt_ids)) x (1 + len(pred_ids)), C order) the number of pixels of\n"
"every (GT row, predicted row) pair of two images of the same size, given as inflated 8-bit RGB(A)\n"
"scanlines. A pixel's row is 0 for id 0 (VOID), 1 + the position of its id in the image's declared ids\n"
"(uint32, ascending, fewer than 65535). Returns False, with `counts` incomplete, where an image has an\n"
"id it does not declare. ValueError(0 or 1 for GT or prediction, message) on truncated data or an\n"
"invalid filter byte.");

static PyObject *pair_counts(PyObject *self, PyObject *args)
{
    Py_buffer gt_data, gt_keys, pred_data, pred_keys, counts;
    Py_ssize_t width, height;
    int gt_channels, pred_channels, status = 0, bad = 0;
    Lines gt_lines, pred_lines;
    if (!PyArg_ParseTuple(args, "y*iy*y*iy*nnw*", &gt_data, &gt_channels, &gt_keys, &pred_data, &pred_channels,
                          &pred_keys, &width, &height, &counts))
        return NULL;
    RowLookup gt = {.keys = gt_keys.buf, .n_keys = gt_keys.len / (Py_ssize_t)sizeof(uint32_t)};
    RowLookup pred = {.keys = pred_keys.buf, .n_keys = pred_keys.len / (Py_ssize_t)sizeof(uint32_t)};
    if (check_scanlines(0, &gt_data, width, height, gt_channels) < 0 ||
        check_scanlines(1, &pred_data, width, height, pred_channels) < 0)
        goto done;
    if (gt_keys.len % sizeof(uint32_t) || pred_keys.len % sizeof(uint32_t) || gt.n_keys >= 0xFFFF ||
        pred.n_keys >= 0xFFFF || counts.len != (gt.n_keys + 1) * (pred.n_keys + 1) * (Py_ssize_t)sizeof(int64_t)) {
        PyErr_SetString(PyExc_TypeError, "pair_counts: ids must be uint32 (< 65535 of them), counts int64 of their shape");
        goto done;
    }
    if (lines_open(&gt_lines, gt_data.buf, width, height, gt_channels) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    if (lines_open(&pred_lines, pred_data.buf, width, height, pred_channels) < 0) {
        lines_close(&gt_lines);
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    status = count_pairs(&gt_lines, &pred_lines, &gt, &pred, counts.buf, pred.n_keys + 1, &bad);
    Py_END_ALLOW_THREADS
    if (status == -1)
        set_filter_error(bad, bad ? &pred_lines : &gt_lines);
    else if (status == -2)
        PyErr_NoMemory();
    lines_close(&gt_lines);
    lines_close(&pred_lines);
done:
    PyBuffer_Release(&gt_data);
    PyBuffer_Release(&gt_keys);
    PyBuffer_Release(&pred_data);
    PyBuffer_Release(&pred_keys);
    PyBuffer_Release(&counts);
    if (PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(!gt.undeclared && !pred.undeclared);
}

static PyMethodDef methods[] = {
    {"scanlines_to_ids", scanlines_to_ids, METH_VARARGS, scanlines_to_ids_doc},
    {"pair_counts", pair_counts, METH_VARARGS, pair_counts_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "oanet._ext._speedups",
    "C loops of oanet's PNG reading and PQ evaluation (see speedups.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
