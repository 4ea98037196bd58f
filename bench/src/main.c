/* The second object of the link-step benchmark: main() calling into small.c. */
#include <stdio.h>

void report(FILE *out, int n);

int main(void)
{
    report(stdout, 20);
    return 0;
}
