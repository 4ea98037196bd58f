#include <ctype.h>
#include <stdlib.h>
#include "calc.h"

void lexer_init(struct lexer *lx, const char *text)
{
    lx->text = text;
    lx->pos = 0;
}

struct token lexer_next(struct lexer *lx)
{
    struct token t = { TOK_END, 0.0 };
    while (isspace((unsigned char)lx->text[lx->pos]))
        lx->pos++;
    char c = lx->text[lx->pos];
    if (c == '\0')
        return t;
    if (isdigit((unsigned char)c) || c == '.') {
        char *end;
        t.kind = TOK_NUM;
        t.value = strtod(lx->text + lx->pos, &end);
        lx->pos = (size_t)(end - lx->text);
        return t;
    }
    lx->pos++;
    switch (c) {
    case '+': t.kind = TOK_PLUS; break;
    case '-': t.kind = TOK_MINUS; break;
    case '*': t.kind = TOK_STAR; break;
    case '/': t.kind = TOK_SLASH; break;
    case '(': t.kind = TOK_LPAREN; break;
    case ')': t.kind = TOK_RPAREN; break;
    default: t.kind = TOK_ERROR; break;
    }
    return t;
}
