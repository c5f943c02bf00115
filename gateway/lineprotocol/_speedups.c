/*
 * gateway.lineprotocol._speedups -- the C accelerator of the line protocol validator.
 *
 * One function, scan_plain(body, pos, policy), decides a run of *plain* lines at C speed. It is
 * an accelerator, not a second parser: the pure-Python code (validate.py, syntax.py, rules.py,
 * precision.py) stays the reference, produces every error message, and handles every line this
 * file does not fully understand. A line is either
 *
 *   - accepted here: it is plain (grammar below), valid, passes the write rules and the
 *     timestamp policy; or
 *   - refused for its timestamp alone: it is plain and valid but its timestamp fails the policy
 *     (the guard, or overflow after scaling). The scan stops and says so, and Python decides the
 *     line with its plain-line code (validate._Run.plain_line), which words the reason, without
 *     running the exact parser: a body sent in the wrong precision stays cheap; or
 *   - left to Python: the scan stops at its first byte and returns what it accepted so far.
 *
 * So C never has to word an error; it only ever says "these lines are fine" (or "this one is
 * fine but for its timestamp").
 *
 * The plain grammar is fastpath.PLAIN_LINES's line grammar (a strict subset of InfluxDB 3's),
 * with integers and timestamps of any number of digits (their ranges are checked here):
 *
 *   line        = measurement tag* " " field ("," field)* [" " timestamp] ["\r"] ("\n" | END)
 *   measurement = name-char-but-# name-char*
 *   tag         = "," name-char+ "=" name-char+
 *   field       = name-char+ "=" value
 *   name-char   = any byte but space, tab, \n, \r, NUL, ",", "=", "\", '"'
 *   value       = -?D+ "i"                    integer, int64 (any number of leading zeros)
 *               | D+ "u"                      unsigned, uint64
 *               | -?D+ ("." D+)? ([eE] [-+]? D+)?   float (overflow is infinity: accepted)
 *               | '"' string-char* '"'        string-char: any byte but '"', "\", \n, \r
 *               | t | T | true | True | TRUE | f | F | false | False | FALSE
 *   timestamp   = -?D+                        int64
 *
 * A value must be followed by ",", " " or the end of the line. In such a line there is no
 * backslash and no quote outside a string value, and no newline inside one, so IOx's line
 * splitter ends it at its newline: physical and logical lines coincide, and the byte where the
 * scan stops always starts a logical line for Python to take over.
 *
 * Beyond the grammar, a line is accepted only when
 *   - its size (without CR and newline) is at most policy.line_limit (min(max_line_bytes,
 *     65536): no name or string can then exceed InfluxDB 3's 64 KiB, and no line is too long);
 *   - its tag keys and field keys are all distinct and none is `time` (without escapes, raw
 *     names are the names: rules.py then has nothing to say; a repeated field key, which may be
 *     fine, and a `time` field, which is ignored, are left to Python). Up to 32 keys a bit
 *     filter finds candidate duplicates; above, the keys are sorted (no quadratic worst case);
 *   - its timestamp passes precision.TimestampPolicy.check: scaled to ns without int64
 *     overflow, within the guard bounds [lo, hi], truncated to round_to without underflow.
 *
 * The output is what validate.py would write: lines unchanged, except that a CR before the
 * newline is removed, a missing final newline is added, a line without a timestamp gets the
 * request's stamp, and (when the policy rewrites, for m/h precision or round_to) a timestamp
 * whose output token differs is replaced. When nothing changed, no bytes are built at all.
 *
 * Every read is bounds-checked against the end of the bytes object: the scan never reads the
 * terminating NUL CPython keeps after a bytes object's content. The scan itself (scan_lines)
 * uses no Python API -- it reads an immutable bytes object its caller holds and allocates with
 * PyMem_Raw* -- so it runs without the GIL on large bodies: validation in an executor thread
 * leaves the event loop free to run on another core.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Bump when the signature or result of scan_plain changes: implementation.py refuses a
 * stale build (an old in-place .so) instead of calling it wrongly. */
#define INTERFACE_VERSION 2

/* Keys of a line held without allocating; a line with more grows a heap array. */
#define STACK_KEYS 64
/* Up to this many keys duplicates are found with a bit filter, above by sorting. */
#define FILTER_KEYS 32
/* Bodies (from pos) at least this large are scanned without holding the GIL. */
#define RELEASE_GIL_BYTES 16384

static unsigned char NAME_CHAR[256];   /* name-char above */
static unsigned char STRING_CHAR[256]; /* string-char above */

#define IS_DIGIT(c) ((unsigned char)((c) - '0') < 10)

typedef struct {
    int64_t unit;       /* ns per unit of the request precision */
    int64_t out_unit;   /* ns per unit of the output precision */
    int64_t lo, hi;     /* guard bounds in ns, inclusive (lo > hi: every timestamp fails) */
    int64_t round_to;   /* truncate ns to a multiple of this; 0: no truncation */
    int rewrites;       /* output tokens are recomputed from ns (m/h precision or round_to) */
    int64_t stamp_ns;   /* what a line without a timestamp gets, in ns */
    const char *stamp_token; /* ... and as written, in the output precision */
    Py_ssize_t stamp_len;
    Py_ssize_t line_limit; /* the largest line size accepted here */
} Policy;

typedef struct {
    const unsigned char *ptr;
    Py_ssize_t len;
} Key;

/* The tag keys and field keys of the line being parsed. */
typedef struct {
    Key *items; /* `stack` until a line has more keys, then a PyMem_Raw array */
    Py_ssize_t count;
    Py_ssize_t cap;
    Key stack[STACK_KEYS];
} Keys;

/* What parse_line found in one plain line. */
typedef struct {
    const unsigned char *stamp;       /* first byte of the timestamp token, NULL when none */
    const unsigned char *content_end; /* end of the line without CR and newline */
    const unsigned char *next;        /* start of the next line (or the end of the body) */
    int has_cr;
    int has_newline;
    int64_t value; /* the timestamp, in request units */
} Line;

/* A growing output buffer (PyMem_Raw: usable without the GIL). */
typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buffer;

static void
init_tables(void)
{
    for (int c = 0; c < 256; c++) {
        NAME_CHAR[c] = 1;
        STRING_CHAR[c] = 1;
    }
    static const char not_name[] = {' ', '\t', '\n', '\r', '\0', ',', '=', '\\', '"'};
    for (size_t i = 0; i < sizeof(not_name); i++) {
        NAME_CHAR[(unsigned char)not_name[i]] = 0;
    }
    static const char not_string[] = {'"', '\\', '\n', '\r'};
    for (size_t i = 0; i < sizeof(not_string); i++) {
        STRING_CHAR[(unsigned char)not_string[i]] = 0;
    }
}

static inline const unsigned char *
skip_name(const unsigned char *p, const unsigned char *end)
{
    while (p < end && NAME_CHAR[*p]) {
        p++;
    }
    return p;
}

static inline const unsigned char *
skip_digits(const unsigned char *p, const unsigned char *end)
{
    /* Digits are about half of a Telegraf body's bytes: where eight are left, look at eight at
     * a time (on little-endian machines; one at a time elsewhere and near the end). Reads stay
     * inside [p, end). */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        /* a digit is 0x30-0x39: high nibble 3, and adding 6 keeps it there. A byte of 0xFA or
         * more carries into the next one, but it is itself flagged, and only bytes after it
         * are disturbed: the lowest flagged byte is always the first non-digit. */
        uint64_t flagged = ((x & 0xF0F0F0F0F0F0F0F0ull) ^ 0x3030303030303030ull) |
                           (((x + 0x0606060606060606ull) & 0xF0F0F0F0F0F0F0F0ull) ^
                            0x3030303030303030ull);
        if (flagged != 0) {
            return p + (__builtin_ctzll(flagged) >> 3);
        }
        p += 8;
    }
#endif
    while (p < end && IS_DIGIT(*p)) {
        p++;
    }
    return p;
}

/* True when [p, end) starts with the n bytes of text. */
static inline int
starts_with(const unsigned char *p, const unsigned char *end, const char *text, Py_ssize_t n)
{
    return end - p >= n && memcmp(p, text, (size_t)n) == 0;
}

/* True when the digits [p, end) (any number of leading zeros) are at most `limit`, a number of
 * exactly `width` digits: the int64/uint64 range checks, done on the text. */
static int
digits_at_most(const unsigned char *p, const unsigned char *end, const char *limit,
               Py_ssize_t width)
{
    while (p < end && *p == '0') {
        p++;
    }
    Py_ssize_t n = end - p;
    if (n != width) {
        return n < width;
    }
    return memcmp(p, limit, (size_t)width) <= 0;
}

/* The end of the value starting at p, or NULL when it is not a plain value (or an integer out of
 * range). Alternatives are tried in IOx's order, integer, unsigned, float, string, boolean; the
 * first that matches a prefix wins, and the caller checks what follows it. */
static const unsigned char *
scan_value(const unsigned char *p, const unsigned char *end)
{
    if (p >= end) {
        return NULL;
    }
    unsigned char c = *p;
    if (c == '-' || IS_DIGIT(c)) {
        int negative = c == '-';
        const unsigned char *digits = p + negative;
        const unsigned char *q = skip_digits(digits, end);
        if (q == digits) {
            return NULL;
        }
        if (q < end && *q == 'i') {
            const char *limit = negative ? "9223372036854775808" : "9223372036854775807";
            return digits_at_most(digits, q, limit, 19) ? q + 1 : NULL;
        }
        if (q < end && *q == 'u' && !negative) {
            return digits_at_most(digits, q, "18446744073709551615", 20) ? q + 1 : NULL;
        }
        /* A float: an optional fraction and exponent, each taken only when complete. */
        if (end - q >= 2 && *q == '.' && IS_DIGIT(q[1])) {
            q = skip_digits(q + 2, end);
        }
        if (q < end && (*q == 'e' || *q == 'E')) {
            const unsigned char *x = q + 1;
            if (x < end && (*x == '+' || *x == '-')) {
                x++;
            }
            if (x < end && IS_DIGIT(*x)) {
                q = skip_digits(x + 1, end);
            }
        }
        return q;
    }
    if (c == '"') {
        const unsigned char *q = p + 1;
        while (q < end && STRING_CHAR[*q]) {
            q++;
        }
        return q < end && *q == '"' ? q + 1 : NULL;
    }
    p++;
    switch (c) {
    case 't':
        return starts_with(p, end, "rue", 3) ? p + 3 : p;
    case 'T':
        return starts_with(p, end, "rue", 3) || starts_with(p, end, "RUE", 3) ? p + 3 : p;
    case 'f':
        return starts_with(p, end, "alse", 4) ? p + 4 : p;
    case 'F':
        return starts_with(p, end, "alse", 4) || starts_with(p, end, "ALSE", 4) ? p + 4 : p;
    default:
        return NULL;
    }
}

/* The timestamp -?D+ in [p, end) as an int64, or 0 when it is out of range. */
static int
parse_timestamp(const unsigned char *p, const unsigned char *end, int64_t *value)
{
    int negative = *p == '-';
    p += negative;
    while (p < end && *p == '0') {
        p++;
    }
    if (end - p > 19) {
        return 0;
    }
    uint64_t magnitude = 0;
    for (; p < end; p++) {
        magnitude = magnitude * 10 + (uint64_t)(*p - '0'); /* < 10**19 < 2**64 */
    }
    if (negative) {
        if (magnitude > (uint64_t)INT64_MAX + 1) {
            return 0;
        }
        *value = magnitude == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)magnitude;
    }
    else {
        if (magnitude > (uint64_t)INT64_MAX) {
            return 0;
        }
        *value = (int64_t)magnitude;
    }
    return 1;
}

/* Append a key; -1 when the array cannot grow (out of memory). */
static int
add_key(Keys *keys, const unsigned char *ptr, Py_ssize_t len)
{
    if (keys->count == keys->cap) {
        if (keys->cap > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(Key)) {
            return -1;
        }
        Py_ssize_t cap = keys->cap * 2;
        Key *items;
        if (keys->items == keys->stack) {
            items = PyMem_RawMalloc((size_t)cap * sizeof(Key));
            if (items != NULL) {
                memcpy(items, keys->stack, sizeof(keys->stack));
            }
        }
        else {
            items = PyMem_RawRealloc(keys->items, (size_t)cap * sizeof(Key));
        }
        if (items == NULL) {
            return -1;
        }
        keys->items = items;
        keys->cap = cap;
    }
    keys->items[keys->count].ptr = ptr;
    keys->items[keys->count].len = len;
    keys->count++;
    return 0;
}

/* Parse the plain line starting at p (the body ends at end). 1 and `line`/`keys` filled when it
 * is a plain line with in-range numbers and an int64 timestamp, 0 when it is anything else, -1
 * when out of memory. A line longer than `limit` stops the parse as soon as a key shows it. */
static int
parse_line(const unsigned char *p, const unsigned char *end, Py_ssize_t limit, Line *line,
           Keys *keys)
{
    const unsigned char *start = p;
    const unsigned char *q;
    keys->count = 0;
    /* measurement: a name not starting with '#' (that would be a comment line) */
    if (p >= end || !NAME_CHAR[*p] || *p == '#') {
        return 0;
    }
    p = skip_name(p + 1, end);
    /* tag set: ("," key "=" value)*, both non-empty */
    while (p < end && *p == ',') {
        q = skip_name(p + 1, end);
        if (q == p + 1 || q >= end || *q != '=' || q - start > limit) {
            return 0;
        }
        if (add_key(keys, p + 1, q - (p + 1)) < 0) {
            return -1;
        }
        p = skip_name(q + 1, end);
        if (p == q + 1) {
            return 0;
        }
    }
    /* exactly one space, then the field set: key "=" value ("," key "=" value)* */
    if (p >= end || *p != ' ') {
        return 0;
    }
    for (;;) {
        const unsigned char *key = p + 1; /* p is at the space or at a comma */
        q = skip_name(key, end);
        if (q == key || q >= end || *q != '=' || q - start > limit) {
            return 0;
        }
        if (add_key(keys, key, q - key) < 0) {
            return -1;
        }
        p = scan_value(q + 1, end);
        if (p == NULL) {
            return 0;
        }
        if (p >= end || *p != ',') {
            break;
        }
    }
    /* optional timestamp after exactly one space */
    line->stamp = NULL;
    if (p < end && *p == ' ') {
        const unsigned char *stamp = p + 1;
        const unsigned char *digits = stamp + (stamp < end && *stamp == '-');
        p = skip_digits(digits, end);
        if (p == digits || !parse_timestamp(stamp, p, &line->value)) {
            return 0;
        }
        line->stamp = stamp;
    }
    /* the end of the line: an optional CR, then a newline or the end of the body */
    line->content_end = p;
    line->has_cr = p < end && *p == '\r';
    p += line->has_cr;
    if (p < end && *p != '\n') {
        return 0;
    }
    line->has_newline = p < end;
    line->next = p + line->has_newline;
    return 1;
}

static int
compare_keys(const void *a, const void *b)
{
    const Key *x = a, *y = b;
    Py_ssize_t shorter = x->len < y->len ? x->len : y->len;
    int order = memcmp(x->ptr, y->ptr, (size_t)shorter);
    if (order != 0) {
        return order;
    }
    return (x->len > y->len) - (x->len < y->len);
}

/* 1 when the keys are all distinct and none is `time`. For a few keys, a 256-bit filter over a
 * cheap hash of each key finds candidates, and only a filter hit costs comparisons with the
 * earlier keys; many keys are sorted (reordering them is harmless) and neighbours compared. */
static int
keys_are_distinct(Keys *keys)
{
    Key *items = keys->items;
    Py_ssize_t n = keys->count;
    if (n > FILTER_KEYS) {
        qsort(items, (size_t)n, sizeof(Key), compare_keys);
        for (Py_ssize_t i = 0; i < n; i++) {
            if (items[i].len == 4 && memcmp(items[i].ptr, "time", 4) == 0) {
                return 0;
            }
            if (i > 0 && compare_keys(&items[i - 1], &items[i]) == 0) {
                return 0;
            }
        }
        return 1;
    }
    uint64_t seen[4] = {0, 0, 0, 0};
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *key = items[i].ptr;
        Py_ssize_t len = items[i].len; /* >= 1 */
        if (len == 4 && memcmp(key, "time", 4) == 0) {
            return 0;
        }
        uint32_t h = (uint32_t)len * 0x9E3779B1u;
        h ^= key[0] * 0x85EBCA77u;
        h ^= key[len - 1] * 0xC2B2AE3Du;
        h ^= key[len / 2] * 0x27D4EB2Fu;
        h ^= key[(len - 1) / 3] * 0x165667B1u;
        h ^= h >> 15;
        h *= 0x2C1B3C6Du;
        h ^= h >> 13;
        unsigned bit = h & 255u;
        uint64_t mask = (uint64_t)1 << (bit & 63u);
        if (seen[bit >> 6] & mask) {
            for (Py_ssize_t j = 0; j < i; j++) {
                if (items[j].len == len && memcmp(items[j].ptr, key, (size_t)len) == 0) {
                    return 0;
                }
            }
        }
        seen[bit >> 6] |= mask;
    }
    return 1;
}

static inline int
multiply_overflows(int64_t a, int64_t b, int64_t *product)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_mul_overflow(a, b, product);
#else
    /* b > 0 here (a unit) */
    if (a > INT64_MAX / b || a < INT64_MIN / b) {
        return 1;
    }
    *product = a * b;
    return 0;
#endif
}

/* TimestampPolicy.check: the final ns of a timestamp, 0 when Python must reject it. */
static int
final_ns(const Policy *policy, int64_t value, int64_t *ns_out)
{
    int64_t ns;
    if (multiply_overflows(value, policy->unit, &ns)) {
        return 0;
    }
    if (ns < policy->lo || ns > policy->hi) {
        return 0;
    }
    if (policy->round_to) {
        int64_t rest = ns % policy->round_to; /* Python's % is a floor modulo: make it one */
        if (rest < 0) {
            rest += policy->round_to;
        }
        if (ns < INT64_MIN + rest) {
            return 0;
        }
        ns -= rest;
    }
    *ns_out = ns;
    return 1;
}

/* str(ns // out_unit) into out (at least 21 bytes); its length. */
static Py_ssize_t
format_token(int64_t ns, int64_t out_unit, char *out)
{
    int64_t quotient = ns / out_unit;
    if (ns % out_unit != 0 && ns < 0) {
        quotient--; /* floor division, as Python's // */
    }
    char digits[20];
    int n = 0;
    uint64_t magnitude = quotient < 0 ? (uint64_t)0 - (uint64_t)quotient : (uint64_t)quotient;
    do {
        digits[n++] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    Py_ssize_t len = 0;
    if (quotient < 0) {
        out[len++] = '-';
    }
    while (n) {
        out[len++] = digits[--n];
    }
    return len;
}

static int
buffer_reserve(Buffer *buffer, Py_ssize_t extra)
{
    if (extra <= buffer->cap - buffer->len) {
        return 0;
    }
    if (extra > PY_SSIZE_T_MAX / 2 - buffer->len) {
        return -1;
    }
    Py_ssize_t cap = buffer->cap * 2;
    if (cap < buffer->len + extra) {
        cap = buffer->len + extra;
    }
    char *data = PyMem_RawRealloc(buffer->data, (size_t)cap);
    if (data == NULL) {
        return -1;
    }
    buffer->data = data;
    buffer->cap = cap;
    return 0;
}

static int
buffer_append(Buffer *buffer, const void *bytes, Py_ssize_t n)
{
    if (buffer_reserve(buffer, n) < 0) {
        return -1;
    }
    memcpy(buffer->data + buffer->len, bytes, (size_t)n);
    buffer->len += n;
    return 0;
}

static int
int64_item(PyObject *tuple, Py_ssize_t index, int64_t *out)
{
    long long value = PyLong_AsLongLong(PyTuple_GET_ITEM(tuple, index));
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    *out = (int64_t)value;
    return 0;
}

/* The policy tuple (unit, out_unit, lo, hi, round_to, rewrites, stamp_ns, stamp_token,
 * line_limit), as precision.TimestampPolicy.scan_arguments() makes it. */
static int
read_policy(PyObject *tuple, Policy *policy)
{
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) != 9) {
        PyErr_SetString(PyExc_TypeError, "policy must be a tuple of 9 items");
        return -1;
    }
    int64_t rewrites, line_limit;
    if (int64_item(tuple, 0, &policy->unit) < 0 || int64_item(tuple, 1, &policy->out_unit) < 0 ||
        int64_item(tuple, 2, &policy->lo) < 0 || int64_item(tuple, 3, &policy->hi) < 0 ||
        int64_item(tuple, 4, &policy->round_to) < 0 || int64_item(tuple, 5, &rewrites) < 0 ||
        int64_item(tuple, 6, &policy->stamp_ns) < 0 || int64_item(tuple, 8, &line_limit) < 0) {
        return -1;
    }
    if (policy->unit <= 0 || policy->out_unit <= 0 || policy->round_to < 0) {
        PyErr_SetString(PyExc_ValueError, "units must be positive and round_to not negative");
        return -1;
    }
    PyObject *stamp = PyTuple_GET_ITEM(tuple, 7);
    if (!PyBytes_Check(stamp)) {
        PyErr_SetString(PyExc_TypeError, "stamp_token must be bytes");
        return -1;
    }
    policy->rewrites = rewrites != 0;
    policy->stamp_token = PyBytes_AS_STRING(stamp);
    policy->stamp_len = PyBytes_GET_SIZE(stamp);
    policy->line_limit = line_limit > PY_SSIZE_T_MAX ? PY_SSIZE_T_MAX : (Py_ssize_t)line_limit;
    return 0;
}

/* Where a scan stopped and what it found. */
typedef struct {
    const unsigned char *stop;    /* the start of the first line not accepted, or the end */
    const unsigned char *refused; /* the end of a line refused for its timestamp, or NULL */
    Py_ssize_t accepted;
    Py_ssize_t newlines;
    int64_t lowest, highest; /* final ns span of the accepted lines */
    int building;            /* out holds the normalized bytes of [start, stop) */
    Buffer out;
} Scan;

/* Append the output of an accepted line that changed (see the top of this file). */
static int
append_changed(Buffer *out, const Policy *policy, const unsigned char *p, const Line *line,
               int rewrite, const char *token, Py_ssize_t token_len)
{
    if (line->stamp == NULL) {
        return buffer_append(out, p, line->content_end - p) || buffer_append(out, " ", 1) ||
               buffer_append(out, policy->stamp_token, policy->stamp_len) ||
               buffer_append(out, "\n", 1);
    }
    if (rewrite) {
        return buffer_append(out, p, line->stamp - p) ||
               buffer_append(out, token, token_len) || buffer_append(out, "\n", 1);
    }
    return buffer_append(out, p, line->content_end - p) || buffer_append(out, "\n", 1);
}

/* The scan proper, from `start` to `end`: no Python API, so it may run without the GIL. 0, or -1
 * when out of memory. */
static int
scan_lines(const Policy *policy, const unsigned char *start, const unsigned char *end,
           Scan *scan)
{
    const unsigned char *p = start;
    Keys keys;
    keys.items = keys.stack;
    keys.cap = STACK_KEYS;
    Line line;
    char token[24];
    int status = 0;

    while (p < end) {
        int parsed = parse_line(p, end, policy->line_limit, &line, &keys);
        if (parsed < 0) {
            status = -1;
            break;
        }
        if (!parsed || line.content_end - p > policy->line_limit || !keys_are_distinct(&keys)) {
            break;
        }
        int64_t ns;
        int rewrite = 0;
        Py_ssize_t token_len = 0;
        if (line.stamp == NULL) {
            ns = policy->stamp_ns;
        }
        else {
            if (!final_ns(policy, line.value, &ns)) {
                scan->refused = line.next - line.has_newline;
                break;
            }
            if (policy->rewrites) {
                token_len = format_token(ns, policy->out_unit, token);
                rewrite = token_len != line.content_end - line.stamp ||
                          memcmp(token, line.stamp, (size_t)token_len) != 0;
            }
        }
        int changed = line.stamp == NULL || rewrite || line.has_cr || !line.has_newline;
        if (changed && !scan->building) {
            /* From the first change on, every line is copied into out: first the unchanged
             * ones so far, with room for the rest to grow a little. */
            scan->building = 1;
            if (buffer_reserve(&scan->out, (end - start) + 64) < 0 ||
                buffer_append(&scan->out, start, p - start) < 0) {
                status = -1;
                break;
            }
        }
        if (scan->building) {
            int failed = changed ? append_changed(&scan->out, policy, p, &line, rewrite, token,
                                                  token_len)
                                 : buffer_append(&scan->out, p, line.next - p);
            if (failed) {
                status = -1;
                break;
            }
        }
        scan->accepted++;
        scan->newlines += line.has_newline;
        if (ns < scan->lowest) {
            scan->lowest = ns;
        }
        if (ns > scan->highest) {
            scan->highest = ns;
        }
        p = line.next;
    }
    scan->stop = p;
    if (keys.items != keys.stack) {
        PyMem_RawFree(keys.items);
    }
    return status;
}

PyDoc_STRVAR(scan_plain_doc,
"scan_plain(body, pos, policy, /)\n--\n\n"
"Accept the plain, valid lines of `body` from offset `pos` on, stopping at the first line\n"
"Python must look at. Returns (end, newlines, accepted, lowest_ns, highest_ns, out, refused):\n"
"the offset where the scan stopped (the start of a line, or len(body)), the newlines and the\n"
"lines it consumed, the span of their final timestamps in ns (0, 0 when none), the\n"
"normalized bytes of body[pos:end] or None when they are exactly body[pos:end], and, when\n"
"the line at `end` is plain and valid but for its timestamp, the offset of its end (its\n"
"newline or len(body)), else None.");

static PyObject *
scan_plain(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "scan_plain() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (!PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "body must be bytes");
        return NULL;
    }
    /* args[0] and the policy tuple (with its stamp token) stay referenced by the caller for the
     * whole call, and bytes are immutable: safe to read without the GIL. */
    const unsigned char *body = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (pos < 0 || pos > size) {
        PyErr_SetString(PyExc_ValueError, "pos is outside the body");
        return NULL;
    }
    Policy policy;
    if (read_policy(args[2], &policy) < 0) {
        return NULL;
    }

    Scan scan = {NULL, NULL, 0, 0, INT64_MAX, INT64_MIN, 0, {NULL, 0, 0}};
    int status;
    if (size - pos >= RELEASE_GIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        status = scan_lines(&policy, body + pos, body + size, &scan);
        Py_END_ALLOW_THREADS
    }
    else {
        status = scan_lines(&policy, body + pos, body + size, &scan);
    }
    if (status < 0) {
        PyMem_RawFree(scan.out.data);
        return PyErr_NoMemory();
    }

    PyObject *rewritten;
    if (scan.building) {
        rewritten = PyBytes_FromStringAndSize(scan.out.data, scan.out.len);
        PyMem_RawFree(scan.out.data);
        if (rewritten == NULL) {
            return NULL;
        }
    }
    else {
        rewritten = Py_NewRef(Py_None);
    }
    PyObject *refused_end;
    if (scan.refused != NULL) {
        refused_end = PyLong_FromSsize_t(scan.refused - body);
        if (refused_end == NULL) {
            Py_DECREF(rewritten);
            return NULL;
        }
    }
    else {
        refused_end = Py_NewRef(Py_None);
    }
    if (scan.accepted == 0) {
        scan.lowest = scan.highest = 0;
    }
    return Py_BuildValue("(nnnLLNN)", (Py_ssize_t)(scan.stop - body), scan.newlines,
                         scan.accepted, (long long)scan.lowest, (long long)scan.highest,
                         rewritten, refused_end);
}

static PyMethodDef speedups_methods[] = {
    {"scan_plain", (PyCFunction)(void (*)(void))scan_plain, METH_FASTCALL, scan_plain_doc},
    {NULL, NULL, 0, NULL},
};

static int
speedups_exec(PyObject *module)
{
    return PyModule_AddIntConstant(module, "INTERFACE_VERSION", INTERFACE_VERSION);
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gateway.lineprotocol._speedups",
    .m_doc = "The C accelerator of gateway.lineprotocol.validate: see implementation.py.",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    init_tables();
    return PyModuleDef_Init(&speedups_module);
}
