/* Hot loops of oanet's PNG reading and PQ evaluation (oanet/data/png_io.py, oanet/evaluation/pq.py).
 *
 * Python inflates a PNG's IDAT stream (zlib-ng); these functions undo the PNG row filters of an 8-bit
 * RGB or RGBA non-interlaced image one line at a time, into two line buffers that stay in cache, and
 * either write each pixel's panoptic id (R + 256 G + 256^2 B) or, for a GT and a predicted image at
 * once, count the pixels of every (GT segment, predicted segment) pair without ever building an id map.
 *
 * Label maps are runs of equal pixels, and their filtered lines are mostly zero residuals: a line is
 * reconstructed from the places where something happens (a nonzero residual, found 64 bytes at a time,
 * or for Paeth a place where the line above changes) with the spans between them copied, and it comes
 * out as its list of runs. A Up or Paeth line with no nonzero residual repeats the line above and costs
 * one scan. Counting merges the runs of the two images, so it costs per run, not per pixel.
 * Python checks the PNG header and leaves every other format to pyspng/Pillow. Buffers come in through
 * the buffer protocol, so no numpy headers are needed to build this; the GIL is released in the loops.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

enum { FILTER_NONE, FILTER_SUB, FILTER_UP, FILTER_AVERAGE, FILTER_PAETH };

static inline int paeth_predictor(int a, int b, int c)
{
    /* PNG spec 9.4: the neighbour (left a, up b, up-left c) closest to a + b - c, ties in that order. */
    int pa = abs(b - c), pb = abs(a - c), pc = abs(a + b - 2 * c);
    int b_or_c = pb <= pc ? b : c;
    return pa <= (pb <= pc ? pb : pc) ? a : b_or_c;
}

static inline uint32_t pixel_id(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16);
}

/* Index of the first nonzero byte of p[i..n), or n. Residuals of label maps are mostly zero: this scan,
 * 64 bytes a step, is what finds the few pixels a line's reconstruction has to compute. */
static inline Py_ssize_t next_nonzero(const uint8_t *p, Py_ssize_t i, Py_ssize_t n)
{
#ifdef __SSE2__
    const __m128i zero = _mm_setzero_si128();
    for (; i + 64 <= n; i += 64) {
        __m128i any = _mm_or_si128(_mm_or_si128(_mm_loadu_si128((const __m128i *)(p + i)),
                                                _mm_loadu_si128((const __m128i *)(p + i + 16))),
                                   _mm_or_si128(_mm_loadu_si128((const __m128i *)(p + i + 32)),
                                                _mm_loadu_si128((const __m128i *)(p + i + 48))));
        if (_mm_movemask_epi8(_mm_cmpeq_epi8(any, zero)) != 0xFFFF)
            break;
    }
#endif
    for (; i + 16 <= n; i += 16) {
        uint64_t a, b;
        memcpy(&a, p + i, 8);
        memcpy(&b, p + i + 8, 8);
        if (a | b)
            break;
    }
    for (; i < n; i++)
        if (p[i])
            return i;
    return n;
}

/* An image's scanlines, reconstructed one line at a time into two buffers that stay in cache, with the
 * runs of each line: the x where a pixel differs from its left neighbour (0 first, then `width` as an
 * end mark). Runs are what the counting works on, and they tell the reconstruction of the next line
 * where the line above changes: between those places and the nonzero residuals, a line of a label map
 * only repeats a pixel (Sub, Paeth) or the line above (Up). */
typedef struct {
    const uint8_t *data; /* inflated: per line a filter byte and width * bpp bytes */
    Py_ssize_t width, height, stride, y;
    int bpp;
    uint8_t *prev, *cur;           /* the last two reconstructed lines (prev: zeros above the first line) */
    Py_ssize_t *prev_starts, *cur_starts; /* their run starts, each ended by `width` */
    Py_ssize_t n_prev, n_cur;      /* their numbers of runs */
} Lines;

static int lines_open(Lines *lines, const uint8_t *data, Py_ssize_t width, Py_ssize_t height, int bpp)
{
    Py_ssize_t stride = width * bpp;
    uint8_t *buffers = calloc(2, (size_t)stride);
    Py_ssize_t *starts = malloc(2 * (size_t)(width + 1) * sizeof(Py_ssize_t));
    if (!buffers || !starts) {
        free(buffers);
        free(starts);
        return -1;
    }
    *lines = (Lines){.data = data, .width = width, .height = height, .stride = stride, .bpp = bpp,
                     .prev = buffers, .cur = buffers + stride, .prev_starts = starts,
                     .cur_starts = starts + width + 1, .n_prev = 1, .n_cur = 1};
    /* Both lines start as the zeros above the first line (one run): the first lines_next makes cur prev. */
    starts[0] = lines->cur_starts[0] = 0;
    starts[1] = lines->cur_starts[1] = width;
    return 0;
}

static void lines_close(Lines *lines)
{
    free(lines->prev < lines->cur ? lines->prev : lines->cur);
    free(lines->prev_starts < lines->cur_starts ? lines->prev_starts : lines->cur_starts);
}

static inline int pixels_differ(const uint8_t *a, const uint8_t *b, const int bpp)
{
    return memcmp(a, b, (size_t)bpp) != 0;
}

/* cur[x..end) = copies of pixel x - 1: a pattern of PATTERN_PIXELS pixels, copied in constant-size steps. */
#define PATTERN_PIXELS 16
static inline void repeat_left(uint8_t *cur, Py_ssize_t x, Py_ssize_t end, const int bpp)
{
    uint8_t *dst = cur + x * bpp, *stop = cur + end * bpp;
    if (end - x <= 4) {
        for (; dst < stop; dst++)
            *dst = dst[-bpp];
        return;
    }
    uint8_t pattern[PATTERN_PIXELS * 4];
    for (int k = 0; k < PATTERN_PIXELS * bpp; k++)
        pattern[k] = dst[k % bpp - bpp];
    for (; dst + PATTERN_PIXELS * bpp <= stop; dst += PATTERN_PIXELS * bpp)
        memcpy(dst, pattern, PATTERN_PIXELS * bpp);
    memcpy(dst, pattern, (size_t)(stop - dst));
}

/* Sub and Paeth lines. Where the residual is zero, Sub predicts the left pixel; so does Paeth where the
 * line above repeats its own left pixel (up == up-left). So between the nonzero residuals (and, for
 * Paeth, the run starts of the line above) a line only repeats its left pixel: those spans are filled,
 * and only the pixels at these places are computed byte by byte. Returns the number of runs. */
static inline Py_ssize_t decode_left_predicted(Lines *lines, const uint8_t *filtered, Py_ssize_t nonzero, int paeth,
                                                const int bpp)
{
    uint8_t *cur = lines->cur;
    const uint8_t *prev = lines->prev;
    const Py_ssize_t *above = lines->prev_starts;
    Py_ssize_t *starts = lines->cur_starts, width = lines->width, n = lines->stride;
    Py_ssize_t x = 0, runs = 0, a = 0;
    int k;
    while (x < width) {
        if (nonzero < x * bpp)
            nonzero = next_nonzero(filtered, x * bpp, n);
        Py_ssize_t event = x == 0 ? 0 : nonzero / bpp; /* the first pixel has no left one to repeat */
        if (paeth) {
            while (above[a] < x)
                a++;
            if (above[a] < event)
                event = above[a];
        }
        if (paeth && event > x && !pixels_differ(prev + x * bpp, cur + (x - 1) * bpp, bpp))
            memcpy(cur + x * bpp, prev + x * bpp, (size_t)((event - x) * bpp)); /* the line above continues */
        else
            repeat_left(cur, x, event, bpp);
        if (event >= width)
            break;
        uint8_t *p = cur + event * bpp;
        const uint8_t *f = filtered + event * bpp, *up = prev + event * bpp;
        if (event == 0) { /* Paeth predicts the pixel above (left and up-left are 0), Sub predicts 0 */
            for (k = 0; k < bpp; k++)
                p[k] = (uint8_t)(f[k] + (paeth ? up[k] : 0));
        } else if (paeth) {
            for (k = 0; k < bpp; k++)
                p[k] = (uint8_t)(f[k] + paeth_predictor(p[k - bpp], up[k], up[k - bpp]));
        } else {
            for (k = 0; k < bpp; k++)
                p[k] = (uint8_t)(f[k] + p[k - bpp]);
        }
        if (event == 0 || pixels_differ(p, p - bpp, bpp))
            starts[runs++] = event;
        x = event + 1;
    }
    return runs;
}

/* Up lines: where the residual is zero the line above is copied, and with it its run starts. */
static inline Py_ssize_t decode_up(Lines *lines, const uint8_t *filtered, Py_ssize_t nonzero, const int bpp)
{
    uint8_t *cur = lines->cur;
    const uint8_t *prev = lines->prev;
    const Py_ssize_t *above = lines->prev_starts;
    Py_ssize_t *starts = lines->cur_starts, width = lines->width, n = lines->stride;
    Py_ssize_t x = 0, runs = 0, a = 0;
    while (x < width) {
        if (nonzero < x * bpp)
            nonzero = next_nonzero(filtered, x * bpp, n);
        Py_ssize_t event = nonzero / bpp;
        if (event > x) {
            memcpy(cur + x * bpp, prev + x * bpp, (size_t)((event - x) * bpp));
            if (x == 0 || pixels_differ(cur + x * bpp, cur + (x - 1) * bpp, bpp))
                starts[runs++] = x;
            while (above[a] <= x)
                a++;
            while (above[a] < event)
                starts[runs++] = above[a++];
        }
        if (event >= width)
            break;
        uint8_t *p = cur + event * bpp;
        for (int k = 0; k < bpp; k++)
            p[k] = (uint8_t)(filtered[event * bpp + k] + prev[event * bpp + k]);
        if (event == 0 || pixels_differ(p, p - bpp, bpp))
            starts[runs++] = event;
        x = event + 1;
    }
    return runs;
}

/* None and Average lines (rare in label maps): every byte, then the runs by comparing pixels. */
static inline Py_ssize_t decode_any(Lines *lines, const uint8_t *filtered, int filter, const int bpp)
{
    uint8_t *cur = lines->cur;
    const uint8_t *prev = lines->prev;
    Py_ssize_t *starts = lines->cur_starts, width = lines->width, n = lines->stride, i, runs = 1;
    int k;
    if (filter == FILTER_NONE) {
        memcpy(cur, filtered, (size_t)n);
    } else {
        for (k = 0; k < bpp; k++)
            cur[k] = (uint8_t)(filtered[k] + (prev[k] >> 1));
        for (i = bpp; i < n; i++)
            cur[i] = (uint8_t)(filtered[i] + ((cur[i - bpp] + prev[i]) >> 1));
    }
    starts[0] = 0;
    for (i = 1; i < width; i++)
        if (pixels_differ(cur + i * bpp, cur + (i - 1) * bpp, bpp))
            starts[runs++] = i;
    return runs;
}

/* Reconstructs the next line into lines->cur, with its runs. Returns 1 if it equals the line before (a Up
 * or Paeth line whose residuals are all zero: nothing is computed, the buffers stay), 0 if not (or it is
 * the first line), -1 for an invalid filter byte (lines->y is then that line). */
static int lines_next(Lines *lines)
{
    const uint8_t *line = lines->data + lines->y * (lines->stride + 1);
    const uint8_t *filtered = line + 1;
    int filter = line[0], bpp = lines->bpp;
    Py_ssize_t runs;
    if (filter > FILTER_PAETH)
        return -1;
    Py_ssize_t nonzero = next_nonzero(filtered, 0, lines->stride);
    if (lines->y > 0 && (filter == FILTER_UP || filter == FILTER_PAETH) && nonzero == lines->stride) {
        lines->y++;
        return 1;
    }
    uint8_t *swap = lines->prev;
    lines->prev = lines->cur;
    lines->cur = swap;
    Py_ssize_t *swap_starts = lines->prev_starts, n_prev = lines->n_cur;
    lines->prev_starts = lines->cur_starts;
    lines->cur_starts = swap_starts;
    lines->n_prev = n_prev;
    /* bpp is a constant in each call: the byte loops unroll for RGB and RGBA. */
    if (filter == FILTER_SUB || filter == FILTER_PAETH)
        runs = bpp == 3 ? decode_left_predicted(lines, filtered, nonzero, filter == FILTER_PAETH, 3)
                        : decode_left_predicted(lines, filtered, nonzero, filter == FILTER_PAETH, 4);
    else if (filter == FILTER_UP)
        runs = bpp == 3 ? decode_up(lines, filtered, nonzero, 3) : decode_up(lines, filtered, nonzero, 4);
    else
        runs = bpp == 3 ? decode_any(lines, filtered, filter, 3) : decode_any(lines, filtered, filter, 4);
    lines->cur_starts[runs] = lines->width;
    lines->n_cur = runs;
    lines->y++;
    return 0;
}

/* Segment id -> row: 0 for VOID, 1 + the position in the declared ids (ascending) otherwise. Recent
 * answers are kept in a small direct-mapped cache: runs alternate between a few ids (A B A ...), and lines
 * below each other mostly share them, so few lookups search. */
#define CACHE_BITS 8
typedef struct {
    const uint32_t *keys;
    Py_ssize_t n_keys;
    uint32_t cached_id[1 << CACHE_BITS]; /* 0xFFFFFFFF: empty (no PNG id is that large) */
    uint16_t cached_row[1 << CACHE_BITS];
    int undeclared; /* an id not in keys was seen */
} RowLookup;

static void lookup_init(RowLookup *lookup, const uint32_t *keys, Py_ssize_t n_keys)
{
    lookup->keys = keys;
    lookup->n_keys = n_keys;
    lookup->undeclared = 0;
    memset(lookup->cached_id, 0xFF, sizeof(lookup->cached_id));
}

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

static inline uint16_t row_of(RowLookup *lookup, uint32_t id)
{
    unsigned slot = (id * 2654435761u) >> (32 - CACHE_BITS); /* Fibonacci hashing */
    if (lookup->cached_id[slot] != id) {
        lookup->cached_id[slot] = id;
        lookup->cached_row[slot] = search_row(lookup, id);
    }
    return lookup->cached_row[slot];
}

/* The row of each run of the current line into rows. */
static void run_rows(const Lines *lines, RowLookup *lookup, uint16_t *rows)
{
    for (Py_ssize_t i = 0; i < lines->n_cur; i++)
        rows[i] = row_of(lookup, pixel_id(lines->cur + lines->cur_starts[i] * lines->bpp));
}

/* A run of pixels with one (GT row, predicted row) pair along a line. */
typedef struct {
    uint16_t gt, pred;
    Py_ssize_t length;
} Run;

/* The (GT row, predicted row) runs of a pair of lines, from the runs of each: a merge of two sorted lists. */
static Py_ssize_t pair_runs(const Lines *gt, const uint16_t *gt_rows, const Lines *pred, const uint16_t *pred_rows,
                            Run *runs)
{
    const Py_ssize_t *g = gt->cur_starts, *p = pred->cur_starts;
    Py_ssize_t i = 0, j = 0, x = 0, n = 0;
    while (x < gt->width) {
        Py_ssize_t g_end = g[i + 1], p_end = p[j + 1], end = g_end < p_end ? g_end : p_end;
        runs[n++] = (Run){gt_rows[i], pred_rows[j], end - x};
        x = end;
        i += g_end == end;
        j += p_end == end;
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
    uint16_t *rows = malloc(2 * (size_t)width * sizeof(uint16_t)), *gt_rows = rows, *pred_rows = rows + width;
    if (!runs || !rows) {
        free(runs);
        free(rows);
        return -2;
    }
    for (y = 0; y < gt_lines->height && !gt->undeclared && !pred->undeclared; y++) {
        int gt_same = lines_next(gt_lines), pred_same = lines_next(pred_lines);
        if (gt_same < 0 || pred_same < 0) {
            *bad = gt_same < 0 ? 0 : 1;
            free(runs);
            free(rows);
            return -1;
        }
        if (gt_same && pred_same) {
            times++;
            continue;
        }
        add_runs(runs, n_runs, times, counts, n_columns);
        if (!gt_same)
            run_rows(gt_lines, gt, gt_rows);
        if (!pred_same)
            run_rows(pred_lines, pred, pred_rows);
        n_runs = pair_runs(gt_lines, gt_rows, pred_lines, pred_rows, runs);
        times = 1;
    }
    add_runs(runs, n_runs, times, counts, n_columns);
    free(runs);
    free(rows);
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
        else if (status == 0)
            for (Py_ssize_t i = 0; i < lines.n_cur; i++) {
                uint32_t id = pixel_id(lines.cur + lines.cur_starts[i] * channels);
                for (Py_ssize_t x = lines.cur_starts[i]; x < lines.cur_starts[i + 1]; x++)
                    ids[y * width + x] = id;
            }
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

/* Counts the (GT row, predicted row) pairs of two images into `counts` (zeroed, (1 + gt keys) x (1 + pred
 * keys)), without the GIL. Returns 0, or -1 with an exception set. */
static int count_images(Py_buffer *gt_data, int gt_channels, RowLookup *gt, Py_buffer *pred_data, int pred_channels,
                        RowLookup *pred, Py_ssize_t width, Py_ssize_t height, int64_t *counts)
{
    Lines gt_lines, pred_lines;
    int status, bad = 0;
    if (check_scanlines(0, gt_data, width, height, gt_channels) < 0 ||
        check_scanlines(1, pred_data, width, height, pred_channels) < 0)
        return -1;
    if (lines_open(&gt_lines, gt_data->buf, width, height, gt_channels) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    if (lines_open(&pred_lines, pred_data->buf, width, height, pred_channels) < 0) {
        lines_close(&gt_lines);
        PyErr_NoMemory();
        return -1;
    }
    Py_BEGIN_ALLOW_THREADS
    status = count_pairs(&gt_lines, &pred_lines, gt, pred, counts, pred->n_keys + 1, &bad);
    Py_END_ALLOW_THREADS
    if (status == -1)
        set_filter_error(bad, bad ? &pred_lines : &gt_lines);
    else if (status == -2)
        PyErr_NoMemory();
    lines_close(&gt_lines);
    lines_close(&pred_lines);
    return status < 0 ? -1 : 0;
}

/* Whether a buffer holds n items of `size` bytes. */
static int holds(const Py_buffer *buffer, Py_ssize_t n, Py_ssize_t size)
{
    return buffer->len == n * size;
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
    int gt_channels, pred_channels;
    RowLookup gt, pred;
    if (!PyArg_ParseTuple(args, "y*iy*y*iy*nnw*", &gt_data, &gt_channels, &gt_keys, &pred_data, &pred_channels,
                          &pred_keys, &width, &height, &counts))
        return NULL;
    lookup_init(&gt, gt_keys.buf, gt_keys.len / (Py_ssize_t)sizeof(uint32_t));
    lookup_init(&pred, pred_keys.buf, pred_keys.len / (Py_ssize_t)sizeof(uint32_t));
    if (gt_keys.len % sizeof(uint32_t) || pred_keys.len % sizeof(uint32_t) || gt.n_keys >= 0xFFFF ||
        pred.n_keys >= 0xFFFF || !holds(&counts, (gt.n_keys + 1) * (pred.n_keys + 1), sizeof(int64_t)))
        PyErr_SetString(PyExc_TypeError, "pair_counts: ids must be uint32 (< 65535 of them), counts int64 of their shape");
    else
        count_images(&gt_data, gt_channels, &gt, &pred_data, pred_channels, &pred, width, height, counts.buf);
    PyBuffer_Release(&gt_data);
    PyBuffer_Release(&gt_keys);
    PyBuffer_Release(&pred_data);
    PyBuffer_Release(&pred_keys);
    PyBuffer_Release(&counts);
    if (PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(!gt.undeclared && !pred.undeclared);
}

enum { STAT_IOU, STAT_TP, STAT_FP, STAT_FN };

/* The declared segments of one image, as pq.py's Segments holds them. */
typedef struct {
    Py_ssize_t n;
    const int64_t *category; /* index into the categories */
    const uint8_t *iscrowd;  /* GT only */
    const double *area;      /* GT only: the JSON's area */
} SegmentTable;

/* Per-category (IoU sum, TP, FP, FN) of one image into stats (4 x n_categories), from its confusion counts,
 * as match_segments in pq.py computes them, operation for operation, so the float sums are the same bits:
 * matches add their IoU in row-major order, the union is ((pred + gt) - intersection) - pred on void.
 * Returns 0; 1 where a declared segment has no pixel (the caller's general path words that error); -1 out
 * of memory. */
static int match_counts(const int64_t *counts, const SegmentTable *gt, const SegmentTable *pred,
                        const int64_t *crowd_row_of_category, Py_ssize_t n_categories, double *stats)
{
    Py_ssize_t columns = pred->n + 1, i, j;
    int64_t *pred_area = calloc((size_t)columns, sizeof(int64_t));
    uint8_t *pred_matched = calloc((size_t)columns, 1);
    int status = 0;
    if (!pred_area || !pred_matched) {
        status = -1;
        goto done;
    }
    for (i = 0; i <= gt->n; i++) {
        int64_t gt_pixels = 0;
        for (j = 0; j < columns; j++) {
            pred_area[j] += counts[i * columns + j];
            gt_pixels += counts[i * columns + j];
        }
        if (i > 0 && gt_pixels <= 0)
            status = 1;
    }
    for (j = 1; j < columns; j++)
        if (pred_area[j] <= 0)
            status = 1;
    if (status)
        goto done;
    memset(stats, 0, 4 * (size_t)n_categories * sizeof(double));
    for (i = 0; i < gt->n; i++) {
        const int64_t *row = counts + (i + 1) * columns + 1;
        int64_t category = gt->category[i];
        int matched = 0;
        if (gt->iscrowd[i])
            continue;
        for (j = 0; j < pred->n; j++) {
            if (row[j] <= 0 || pred->category[j] != category)
                continue;
            double intersection = (double)row[j];
            double union_ = (double)pred_area[j + 1] + gt->area[i] - intersection - (double)counts[j + 1];
            double iou = intersection / union_;
            if (iou > 0.5) {
                stats[STAT_IOU * n_categories + category] += iou;
                stats[STAT_TP * n_categories + category] += 1;
                pred_matched[j] = matched = 1;
            }
        }
        if (!matched)
            stats[STAT_FN * n_categories + category] += 1;
    }
    for (j = 0; j < pred->n; j++) {
        int64_t category = pred->category[j], crowd_row = crowd_row_of_category[category];
        if (pred_matched[j])
            continue;
        /* Ignored when more than half of it lies on GT void and its category's crowd region. */
        int64_t on_void_or_crowd = counts[j + 1] + (crowd_row >= 0 ? counts[(crowd_row + 1) * columns + j + 1] : 0);
        if (!((double)on_void_or_crowd / (double)pred_area[j + 1] > 0.5))
            stats[STAT_FP * n_categories + category] += 1;
    }
done:
    free(pred_area);
    free(pred_matched);
    return status;
}

PyDoc_STRVAR(pair_stats_doc,
"pair_stats(gt_data, gt_channels, gt_ids, pred_data, pred_channels, pred_ids, width, height,\n"
"           gt_category, gt_iscrowd, gt_area, pred_category, crowd_category, crowd_row, stats) -> bool\n"
"--\n\n"
"PQ statistics of one image: pair_counts, then the matching of pq.match_segments, into `stats` (float64,\n"
"4 x number of categories: IoU sum, TP, FP, FN). Categories are int64 indices, gt_iscrowd bool, gt_area\n"
"float64 (the JSON's areas), crowd_category/crowd_row (int64) each category's crowd region (a GT row).\n"
"Returns False, with `stats` unusable, where an image has an id it does not declare or a declared\n"
"segment has no pixel. ValueError(0 or 1, message) as pair_counts.");

static PyObject *pair_stats(PyObject *self, PyObject *args)
{
    Py_buffer gt_data, gt_keys, pred_data, pred_keys, gt_category, gt_crowd, gt_area, pred_category, crowd_category,
        crowd_row, stats;
    Py_ssize_t width, height, n_categories = 0, i;
    int gt_channels, pred_channels, status = -1;
    RowLookup gt, pred;
    int64_t *counts = NULL, *crowd_row_of_category = NULL;
    if (!PyArg_ParseTuple(args, "y*iy*y*iy*nny*y*y*y*y*y*w*", &gt_data, &gt_channels, &gt_keys, &pred_data,
                          &pred_channels, &pred_keys, &width, &height, &gt_category, &gt_crowd, &gt_area,
                          &pred_category, &crowd_category, &crowd_row, &stats))
        return NULL;
    lookup_init(&gt, gt_keys.buf, gt_keys.len / (Py_ssize_t)sizeof(uint32_t));
    lookup_init(&pred, pred_keys.buf, pred_keys.len / (Py_ssize_t)sizeof(uint32_t));
    n_categories = stats.len / (4 * (Py_ssize_t)sizeof(double));
    SegmentTable gt_table = {gt.n_keys, gt_category.buf, gt_crowd.buf, gt_area.buf};
    SegmentTable pred_table = {pred.n_keys, pred_category.buf, NULL, NULL};
    Py_ssize_t n_crowd = crowd_category.len / (Py_ssize_t)sizeof(int64_t);
    int shapes_ok = gt_keys.len % sizeof(uint32_t) == 0 && pred_keys.len % sizeof(uint32_t) == 0 &&
                    gt.n_keys < 0xFFFF && pred.n_keys < 0xFFFF && n_categories > 0 &&
                    holds(&stats, 4 * n_categories, sizeof(double)) && holds(&gt_category, gt.n_keys, 8) &&
                    holds(&gt_crowd, gt.n_keys, 1) && holds(&gt_area, gt.n_keys, 8) &&
                    holds(&pred_category, pred.n_keys, 8) && holds(&crowd_category, n_crowd, 8) &&
                    holds(&crowd_row, n_crowd, 8);
    for (i = 0; shapes_ok && i < gt.n_keys; i++)
        shapes_ok = gt_table.category[i] >= 0 && gt_table.category[i] < n_categories;
    for (i = 0; shapes_ok && i < pred.n_keys; i++)
        shapes_ok = pred_table.category[i] >= 0 && pred_table.category[i] < n_categories;
    for (i = 0; shapes_ok && i < n_crowd; i++)
        shapes_ok = ((int64_t *)crowd_category.buf)[i] >= 0 && ((int64_t *)crowd_category.buf)[i] < n_categories &&
                    ((int64_t *)crowd_row.buf)[i] >= 0 && ((int64_t *)crowd_row.buf)[i] < gt.n_keys;
    if (!shapes_ok) {
        PyErr_SetString(PyExc_TypeError, "pair_stats: arrays of the wrong type or size, or indices out of range");
        goto done;
    }
    counts = calloc((size_t)((gt.n_keys + 1) * (pred.n_keys + 1)), sizeof(int64_t));
    crowd_row_of_category = malloc((size_t)n_categories * sizeof(int64_t));
    if (!counts || !crowd_row_of_category) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n_categories; i++)
        crowd_row_of_category[i] = -1;
    for (i = 0; i < n_crowd; i++)
        crowd_row_of_category[((int64_t *)crowd_category.buf)[i]] = ((int64_t *)crowd_row.buf)[i];
    if (count_images(&gt_data, gt_channels, &gt, &pred_data, pred_channels, &pred, width, height, counts) < 0)
        goto done;
    if (gt.undeclared || pred.undeclared) {
        status = 1;
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    status = match_counts(counts, &gt_table, &pred_table, crowd_row_of_category, n_categories, stats.buf);
    Py_END_ALLOW_THREADS
    if (status < 0)
        PyErr_NoMemory();
done:
    free(counts);
    free(crowd_row_of_category);
    PyBuffer_Release(&gt_data);
    PyBuffer_Release(&gt_keys);
    PyBuffer_Release(&pred_data);
    PyBuffer_Release(&pred_keys);
    PyBuffer_Release(&gt_category);
    PyBuffer_Release(&gt_crowd);
    PyBuffer_Release(&gt_area);
    PyBuffer_Release(&pred_category);
    PyBuffer_Release(&crowd_category);
    PyBuffer_Release(&crowd_row);
    PyBuffer_Release(&stats);
    if (PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(status == 0);
}

static PyMethodDef methods[] = {
    {"scanlines_to_ids", scanlines_to_ids, METH_VARARGS, scanlines_to_ids_doc},
    {"pair_counts", pair_counts, METH_VARARGS, pair_counts_doc},
    {"pair_stats", pair_stats, METH_VARARGS, pair_stats_doc},
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
