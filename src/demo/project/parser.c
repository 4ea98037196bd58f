#include <stdlib.h>
#include "calc.h"
#include "node.h"

struct parser {
    struct lexer lx;
    struct token cur;
    const char *error;
};

static void advance(struct parser *p) { p->cur = lexer_next(&p->lx); }

static struct node *expr(struct parser *p);

static struct node *primary(struct parser *p)
{
    if (p->cur.kind == TOK_NUM) {
        struct node *n = node_number(p->cur.value);
        advance(p);
        return n;
    }
    if (p->cur.kind == TOK_MINUS) {
        advance(p);
        return node_binary('-', node_number(0.0), primary(p));
    }
    if (p->cur.kind == TOK_LPAREN) {
        advance(p);
        struct node *n = expr(p);
        if (p->cur.kind != TOK_RPAREN)
            p->error = "expected ')'";
        else
            advance(p);
        return n;
    }
    p->error = "expected a number or '('";
    return node_number(0.0);
}

static struct node *term(struct parser *p)
{
    struct node *n = primary(p);
    while (p->cur.kind == TOK_STAR || p->cur.kind == TOK_SLASH) {
        char op = p->cur.kind == TOK_STAR ? '*' : '/';
        advance(p);
        n = node_binary(op, n, primary(p));
    }
    return n;
}

static struct node *expr(struct parser *p)
{
    struct node *n = term(p);
    while (p->cur.kind == TOK_PLUS || p->cur.kind == TOK_MINUS) {
        char op = p->cur.kind == TOK_PLUS ? '+' : '-';
        advance(p);
        n = node_binary(op, n, term(p));
    }
    return n;
}

struct node *parse_expression(const char *text, const char **error)
{
    struct parser p = { .error = NULL };
    lexer_init(&p.lx, text);
    advance(&p);
    struct node *n = expr(&p);
    if (!p.error && p.cur.kind != TOK_END)
        p.error = "unexpected input after the expression";
    *error = p.error;
    return n;
}
