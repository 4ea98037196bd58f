#include <stdlib.h>
#include "calc.h"
#include "node.h"

struct node *node_number(double v)
{
    struct node *n = calloc(1, sizeof *n);
    if (n)
        n->value = v;
    return n;
}

struct node *node_binary(char op, struct node *l, struct node *r)
{
    struct node *n = calloc(1, sizeof *n);
    if (n) {
        n->op = op;
        n->left = l;
        n->right = r;
    }
    return n;
}

void node_free(struct node *n)
{
    if (!n)
        return;
    node_free(n->left);
    node_free(n->right);
    free(n);
}

size_t node_count(const struct node *n)
{
    return n ? 1 + node_count(n->left) + node_count(n->right) : 0;
}
