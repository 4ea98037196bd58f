/* A tiny expression calculator: the example project `meshcc demo` builds. */
#ifndef CALC_H
#define CALC_H

#include <stddef.h>

enum token_kind { TOK_NUM, TOK_PLUS, TOK_MINUS, TOK_STAR, TOK_SLASH, TOK_LPAREN, TOK_RPAREN, TOK_END, TOK_ERROR };

struct token {
    enum token_kind kind;
    double value;
};

struct lexer {
    const char *text;
    size_t pos;
};

void lexer_init(struct lexer *lx, const char *text);
struct token lexer_next(struct lexer *lx);

struct node;
struct node *parse_expression(const char *text, const char **error);
double eval(const struct node *n);
void node_free(struct node *n);
size_t node_count(const struct node *n);

char *format_number(double v);
const char *token_name(enum token_kind kind);

#endif
