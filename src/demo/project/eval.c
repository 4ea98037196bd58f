#include "calc.h"
#include "node.h"

double eval(const struct node *n)
{
    if (!n)
        return 0.0;
    switch (n->op) {
    case '+': return eval(n->left) + eval(n->right);
    case '-': return eval(n->left) - eval(n->right);
    case '*': return eval(n->left) * eval(n->right);
    case '/': return eval(n->left) / eval(n->right);
    default: return n->value;
    }
}
