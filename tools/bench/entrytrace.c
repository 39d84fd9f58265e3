// LD_PRELOAD function-entry tracer for a binary whose function entries were
// patched to int3 (0xCC) by `hot_symbols.py patch`. On each first entry the SIGTRAP
// handler logs `PID OFFSET` (the entry's file offset, hex) to $ENTRYTRACE_OUT, puts
// back the original byte (read from the unpatched $ENTRYTRACE_ORIG) and resumes there.
// When the server lets go of its start-up pages (its first madvise(MADV_DONTNEED),
// src/memory.rs), the tracer logs `PID mark` and patches every entry again, so the
// functions logged after the mark are those the running server uses.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>
static unsigned long lo, hi, off;
static int outfd = -1, origfd = -1, marked = 0;

// "PID " then `v` in hex, then a newline; or "PID mark".
static void log_line(unsigned long v, int mark) {
    char buf[64]; int n = 0; char tmp[20]; int k = 0; unsigned long p = (unsigned long)getpid();
    do { tmp[k++] = "0123456789"[p % 10]; p /= 10; } while (p);
    while (k) buf[n++] = tmp[--k];
    buf[n++] = ' ';
    if (mark) { memcpy(buf + n, "mark", 4); n += 4; }
    else {
        do { tmp[k++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
        while (k) buf[n++] = tmp[--k];
    }
    buf[n++] = '\n';
    ssize_t r = write(outfd, buf, n); (void)r;
}
static void handler(int sig, siginfo_t *si, void *vctx) {
    ucontext_t *uc = vctx;
    unsigned long ip = uc->uc_mcontext.gregs[REG_RIP] - 1;
    if (ip < lo || ip >= hi) { signal(sig, SIG_DFL); return; }
    unsigned long fo = ip - lo + off;
    unsigned char b;
    if (pread(origfd, &b, 1, fo) != 1) { signal(sig, SIG_DFL); return; }
    // The page stays writable: restoring bytes of other threads never races a mprotect.
    mprotect((void *)(ip & ~4095UL), 4096, PROT_READ | PROT_WRITE | PROT_EXEC);
    if (*(volatile unsigned char *)ip == 0xCC) {
        *(volatile unsigned char *)ip = b;
        log_line(fo, 0);
    }
    uc->uc_mcontext.gregs[REG_RIP] = ip;
}
__attribute__((constructor)) static void setup(void) {
    const char *out = getenv("ENTRYTRACE_OUT"), *orig = getenv("ENTRYTRACE_ORIG");
    if (!out || !orig) return;
    char exe[4096]; ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return; exe[n] = 0;
    FILE *f = fopen("/proc/self/maps", "r"); if (!f) return;
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b, o; char perm[8];
        if (sscanf(line, "%lx-%lx %7s %lx", &a, &b, perm, &o) != 4) continue;
        char *p = strchr(line, '/'); if (!p) continue;
        p[strcspn(p, "\n")] = 0;
        if (strcmp(p, exe) == 0 && perm[2] == 'x') { lo = a; hi = b; off = o; }
    }
    fclose(f);
    if (!lo) return;
    outfd = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    origfd = open(orig, O_RDONLY | O_CLOEXEC);
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler; sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGTRAP, &sa, 0);
}

// The server's drop of its start-up pages: mark the trace and arm every entry
// again (the running file has an int3 at each; other bytes are the same).
int madvise(void *addr, size_t len, int advice) {
    static int (*real)(void *, size_t, int);
    if (!real) real = (int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "madvise");
    if (advice == MADV_DONTNEED && lo && !__atomic_exchange_n(&marked, 1, __ATOMIC_SEQ_CST)) {
        int exe = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
        if (exe >= 0) {
            mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE | PROT_EXEC);
            log_line(0, 1);
            for (unsigned long a = lo; a < hi; a += 65536) {
                unsigned char chunk[65536];
                size_t n = hi - a < sizeof chunk ? hi - a : sizeof chunk;
                if (pread(exe, chunk, n, a - lo + off) != (ssize_t)n) break;
                for (size_t i = 0; i < n; i++)
                    if (chunk[i] == 0xCC) *(volatile unsigned char *)(a + i) = 0xCC;
            }
            close(exe);
        }
    }
    return real(addr, len, advice);
}
