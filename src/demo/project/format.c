#include <stdio.h>
#include <stdlib.h>
#include "calc.h"

char *format_number(double v)
{
    char *buf = malloc(64);
    if (buf)
        snprintf(buf, 64, "%.10g", v);
    return buf;
}

const char *token_name(enum token_kind kind)
{
    static const char *const names[] = { "number", "+", "-", "*", "/", "(", ")", "end", "error" };
    return (unsigned)kind < sizeof names / sizeof names[0] ? names[kind] : "?";
}
