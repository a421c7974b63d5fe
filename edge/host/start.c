/*
 * Freestanding x86-64 Linux host for the recur-edge static library: no C
 * library, no allocator, no startup files. `_start` reads argv, calls
 * recur_edge_generate with a static output buffer, writes the text with the
 * write system call and exits with exit_group. It also supplies the memory
 * routines (memcpy, memmove, memset, memcmp, bcmp) that Rust's `core` expects
 * from the platform (a firmware gets them from its C library or from
 * compiler_builtins' "mem" feature).
 *
 * Build (what edge/host/build.sh does, for .ci/steps/30-edge.sh and tests/edge_host.rs):
 *   cc -O2 -ffreestanding -fno-builtin -fno-stack-protector -nostdlib -static \
 *      -fno-tree-loop-distribute-patterns host/start.c \
 *      target/release/librecur_edge.a -o target/edge_demo
 * Run: edge_demo PREFIX COUNT [TEMPERATURE_MILLI [TOP_K [SEED]]]
 *      edge_demo -i                 (model, RAM and weight bytes)
 *      edge_demo -s PREFIX COUNT    (stack bytes of a greedy generation)
 *   prints the prefix and COUNT generated characters, then a newline.
 */
typedef unsigned long size_t;
typedef long ssize_t;

extern ssize_t recur_edge_generate(unsigned char *out, size_t out_cap,
                                   const unsigned char *prefix, size_t prefix_len,
                                   size_t count, float temperature, size_t top_k,
                                   unsigned long long seed);
extern size_t recur_edge_ram_bytes(void);
extern size_t recur_edge_weight_bytes(void);
extern const unsigned char *recur_edge_model_source(size_t *len);

/* The text buffer, static like every buffer of the example. */
static unsigned char text[64 * 1024];

static long sys3(long n, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return ret;
}

static void put(const void *p, size_t n) {
    const char *s = p;
    while (n > 0) {
        long w = sys3(1 /* write */, 1, (long)s, (long)n);
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

static size_t cstrlen(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

static void put_str(const char *s) { put(s, cstrlen(s)); }

static void put_num(unsigned long v) {
    char b[24];
    int i = 24;
    do { b[--i] = (char)('0' + v % 10); v /= 10; } while (v);
    put(b + i, (size_t)(24 - i));
}

/* Decimal digits only; -1 on anything else. */
static long parse(const char *s) {
    long v = 0;
    if (!*s) return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

static void __attribute__((noreturn)) quit(int code) {
    sys3(231 /* exit_group */, code, 0, 0);
    for (;;) {}
}

void __attribute__((noreturn, used)) start_c(long *sp) {
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    if (argc == 2 && argv[1][0] == '-' && argv[1][1] == 'i') {
        put_str("ram_bytes ");
        put_num(recur_edge_ram_bytes());
        put_str("\nweight_bytes ");
        put_num(recur_edge_weight_bytes());
        size_t len = 0;
        const unsigned char *src = recur_edge_model_source(&len);
        put_str("\nmodel ");
        put(src, len);
        put_str("\n");
        quit(0);
    }
    /* -s PREFIX COUNT: the stack a greedy generation needs (painted). */
    int measure_stack = argc == 4 && argv[1][0] == '-' && argv[1][1] == 's';
    if (measure_stack) {
        argv++;
        argc--;
    }
    if (argc < 3 || argc > 6) {
        put_str("usage: edge_demo PREFIX COUNT [TEMPERATURE_MILLI [TOP_K [SEED]]] | -i | -s PREFIX COUNT\n");
        quit(2);
    }
    long count = parse(argv[2]);
    long milli = argc > 3 ? parse(argv[3]) : 0;
    long top_k = argc > 4 ? parse(argv[4]) : 0;
    long seed = argc > 5 ? parse(argv[5]) : 0;
    if (count < 0 || milli < 0 || top_k < 0 || seed < 0) {
        put_str("edge_demo: COUNT, TEMPERATURE_MILLI, TOP_K and SEED are decimal numbers\n");
        quit(2);
    }
    const char *prefix = argv[1];
    /* Paint 256 KiB below this frame (the kernel maps the stack on demand),
     * leaving 256 bytes for this frame's own locals. */
    volatile unsigned char *top = (unsigned char *)__builtin_frame_address(0) - 256;
    volatile unsigned char *bottom = top - 256 * 1024;
    if (measure_stack)
        for (volatile unsigned char *p = bottom; p < top; p++) *p = 0xa5;
    ssize_t n = recur_edge_generate(text, sizeof text, (const unsigned char *)prefix,
                                    cstrlen(prefix), (size_t)count, (float)milli / 1000.0f,
                                    (size_t)top_k, (unsigned long long)seed);
    if (n < 0) {
        put_str("edge_demo: recur_edge_generate failed with code ");
        put_num((unsigned long)-n);
        put_str("\n");
        quit(1);
    }
    if (measure_stack) {
        volatile unsigned char *p = bottom;
        while (p < top && *p == 0xa5) p++;
        put_str("stack_bytes ");
        put_num((unsigned long)(top - p) + 256);
        put_str(" (at most, with the shim's frame)\n");
        quit(0);
    }
    put(text, (size_t)n);
    put_str("\n");
    quit(0);
}

/* Entry: the kernel leaves argc at (%rsp); align the stack for the call. */
__asm__(".text\n"
        ".globl _start\n"
        "_start:\n"
        "  xor %rbp, %rbp\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call start_c\n"
        "  ud2\n");

/* The memory routines `core` calls (plain loops; -fno-builtin and
 * -fno-tree-loop-distribute-patterns keep the compiler from turning them
 * back into calls to themselves). */
void *memcpy(void *d, const void *s, size_t n) {
    unsigned char *dp = d;
    const unsigned char *sp = s;
    while (n--) *dp++ = *sp++;
    return d;
}

void *memmove(void *d, const void *s, size_t n) {
    unsigned char *dp = d;
    const unsigned char *sp = s;
    if (dp < sp) {
        while (n--) *dp++ = *sp++;
    } else {
        while (n--) dp[n] = sp[n];
    }
    return d;
}

void *memset(void *d, int c, size_t n) {
    unsigned char *dp = d;
    while (n--) *dp++ = (unsigned char)c;
    return d;
}

int memcmp(const void *a, const void *b, size_t n) {
    const unsigned char *x = a, *y = b;
    for (; n--; x++, y++)
        if (*x != *y) return *x - *y;
    return 0;
}

int bcmp(const void *a, const void *b, size_t n) { return memcmp(a, b, n); }
