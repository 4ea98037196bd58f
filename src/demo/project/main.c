#include <stdio.h>
#include <stdlib.h>
#include "calc.h"

int main(int argc, char **argv)
{
    const char *text = argc > 1 ? argv[1] : "(1 + 2) * 3 - 4 / 8";
    const char *error = NULL;
    struct node *n = parse_expression(text, &error);
    if (error) {
        fprintf(stderr, "error: %s\n", error);
        node_free(n);
        return 1;
    }
    char *out = format_number(eval(n));
    printf("%s = %s (%zu nodes)\n", text, out ? out : "?", node_count(n));
    free(out);
    node_free(n);
    return 0;
}
