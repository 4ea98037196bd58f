#ifndef NODE_H
#define NODE_H

struct node {
    char op; /* 0 for a number */
    double value;
    struct node *left, *right;
};

struct node *node_number(double v);
struct node *node_binary(char op, struct node *l, struct node *r);

#endif
