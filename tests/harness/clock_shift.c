/*
 * A clock that jumps, for the fault tests: preloaded into a redis-server (LD_PRELOAD), it
 * shifts the process's wall clock — clock_gettime(CLOCK_REALTIME...), gettimeofday, time —
 * by the signed number of nanoseconds written in the file LATCHKEY_CLOCK_SHIFT names, read
 * again at every call, so that a test moves the clock of a running server. The monotonic
 * clocks are left alone, as a real clock step leaves them.
 *
 * Debian's libfaketime cannot be used for this: it cannot initialise inside a process that
 * uses jemalloc, as Debian's redis-server does (libfaketime issue #130). This preload
 * needs no allocation and no dlsym: it reads the real clock by system call.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long shift_ns(void) {
    const char *path = getenv("LATCHKEY_CLOCK_SHIFT");
    if (path == NULL) {
        return 0;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    char text[32];
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) {
        return 0;
    }
    text[n] = '\0';
    return strtoll(text, NULL, 10);
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    long result = syscall(SYS_clock_gettime, clock, ts);
    if (result != 0 || (clock != CLOCK_REALTIME && clock != CLOCK_REALTIME_COARSE)) {
        return (int)result;
    }
    long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + shift_ns();
    ts->tv_sec = ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
    return 0;
}

int gettimeofday(struct timeval *tv, void *tz) {
    (void)tz;
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return -1;
    }
    if (tv != NULL) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out != NULL) {
        *out = ts.tv_sec;
    }
    return ts.tv_sec;
}
