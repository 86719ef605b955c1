/* The logger: "gpumem: " prefix, stderr, one line per event (one write(2) call per line). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include "gpumem.h"

int gpumem_log_level = LOG_WARN;

void gpumem_log_init(void)
{
    const char *v = getenv("GPUMEM_LOG");
    if (!v || !*v) return;
    if (!strcasecmp(v, "error")) gpumem_log_level = LOG_ERROR;
    else if (!strcasecmp(v, "warn") || !strcasecmp(v, "warning")) gpumem_log_level = LOG_WARN;
    else if (!strcasecmp(v, "info")) gpumem_log_level = LOG_INFO;
    else if (!strcasecmp(v, "debug")) gpumem_log_level = LOG_DEBUG;
    else gpumem_log(LOG_WARN, "GPUMEM_LOG=%s is not one of error|warn|info|debug; using warn", v);
}

void gpumem_log(int level, const char *fmt, ...)
{
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "gpumem: %s", level == LOG_ERROR ? "error: " : "");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof buf - 2) len = sizeof buf - 2;
    int k = snprintf(buf + len, sizeof buf - len - 1, " [pid %d]", (int)getpid());
    if (k > 0) len += (size_t)k;
    if (len > sizeof buf - 2) len = sizeof buf - 2;
    buf[len++] = '\n';
    ssize_t w = write(2, buf, len);
    (void)w;
}

const char *gpumem_human(uint64_t bytes, char *buf, size_t len)
{
    static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024.0 && u < 5) { v /= 1024.0; u++; }
    if (u == 0) snprintf(buf, len, "%llu B", (unsigned long long)bytes);
    else snprintf(buf, len, "%.2f %s (%llu bytes)", v, units[u], (unsigned long long)bytes);
    return buf;
}
