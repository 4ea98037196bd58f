/* Small C translation unit for the cache-hit benchmark: stdio and a few functions. */
#include <stdio.h>

static int square(int x) { return x * x; }

int sum_squares(int n)
{
    int total = 0;
    for (int i = 1; i <= n; i++)
        total += square(i);
    return total;
}

unsigned long fib(unsigned n)
{
    unsigned long a = 0, b = 1;
    while (n--) {
        unsigned long t = a + b;
        a = b;
        b = t;
    }
    return a;
}

void report(FILE *out, int n)
{
    fprintf(out, "sum of squares to %d: %d\n", n, sum_squares(n));
    fprintf(out, "fib(%d): %lu\n", n, fib((unsigned)n));
}
