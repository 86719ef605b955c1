/* The one limit parser: "0.3" (fraction), "30%" (percent), "12GiB"/"512MiB"/"12G"/"1024" (size,
 * binary units, case-insensitive as in Docker: b,k,m,g,t,p with optional i / iB / B). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "gpumem.h"

extern char **environ;

static const char *skip_ws(const char *s) { while (*s && isspace((unsigned char)*s)) s++; return s; }

/* strict decimal number: digits [. digits]; returns chars consumed, 0 if none */
static size_t parse_number(const char *s, double *out, int *has_dot)
{
    size_t i = 0, digits = 0;
    double v = 0, scale = 1;
    *has_dot = 0;
    while (isdigit((unsigned char)s[i])) { v = v * 10 + (s[i] - '0'); i++; digits++; }
    if (s[i] == '.') {
        *has_dot = 1; i++;
        size_t frac = 0;
        while (isdigit((unsigned char)s[i])) { scale /= 10; v += (s[i] - '0') * scale; i++; frac++; }
        if (!frac) return 0;
    }
    if (!digits) return 0;
    *out = v;
    return i;
}

struct limit gpumem_parse_limit(const char *text)
{
    struct limit bad = { LIMIT_BAD, 0, 0 };
    if (!text) return (struct limit){ LIMIT_NONE, 0, 0 };
    const char *s = skip_ws(text);
    double v; int dot;
    size_t n = parse_number(s, &v, &dot);
    if (!n) return bad;
    s += n;
    const char *rest = skip_ws(s);
    if (*rest == '%') {
        if (*skip_ws(rest + 1) || v <= 0 || v > 100) return bad;
        return (struct limit){ LIMIT_FRACTION, 0, v / 100.0 };
    }
    if (!*rest) {
        if (dot) {   /* a bare number with a dot is a fraction of the device */
            if (v <= 0 || v > 1) return bad;
            return (struct limit){ LIMIT_FRACTION, 0, v };
        }
        if (v > 1.8e19) return bad;
        return (struct limit){ LIMIT_BYTES, (uint64_t)v, 0 };
    }
    double mult;
    switch (tolower((unsigned char)*rest)) {
    case 'b': mult = 1; rest++; goto done;
    case 'k': mult = 1024.0; break;
    case 'm': mult = 1024.0 * 1024; break;
    case 'g': mult = 1024.0 * 1024 * 1024; break;
    case 't': mult = 1024.0 * 1024 * 1024 * 1024; break;
    case 'p': mult = 1024.0 * 1024 * 1024 * 1024 * 1024; break;
    default: return bad;
    }
    rest++;
    if (tolower((unsigned char)*rest) == 'i') rest++;
    if (tolower((unsigned char)*rest) == 'b') rest++;
done:
    if (*skip_ws(rest)) return bad;
    double bytes = v * mult;
    if (bytes > 1.8e19) return bad;
    return (struct limit){ LIMIT_BYTES, (uint64_t)bytes, 0 };
}

int gpumem_device_limits_present(void)
{
    for (char **e = environ; e && *e; e++)
        if (!strncmp(*e, "GPUMEM_LIMIT_", 13) && isdigit((unsigned char)(*e)[13])) return 1;
    return 0;
}

int gpumem_limits_present(void) { return getenv("GPUMEM_LIMIT") || gpumem_device_limits_present(); }

struct limit gpumem_limit_for(int ordinal, const char **var_out, const char **val_out)
{
    static __thread char name[48];
    snprintf(name, sizeof name, "GPUMEM_LIMIT_%d", ordinal);
    const char *v = getenv(name);
    if (!v) { v = getenv("GPUMEM_LIMIT"); snprintf(name, sizeof name, "GPUMEM_LIMIT"); }
    *var_out = v ? name : NULL;
    *val_out = v;
    if (!v) return (struct limit){ LIMIT_NONE, 0, 0 };
    return gpumem_parse_limit(v);
}

uint64_t gpumem_parse_size_env(const char *name, uint64_t dflt)
{
    const char *v = getenv(name);
    if (!v) return dflt;
    struct limit l = gpumem_parse_limit(v);
    if (l.kind != LIMIT_BYTES) {
        gpumem_log(LOG_ERROR, "%s=%s is not a size (e.g. 512MiB); using the default", name, v);
        return dflt;
    }
    return l.bytes;
}
