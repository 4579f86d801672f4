/*
 * Prompt string templates in the f-string style of LangChain's PromptTemplate: "{name}"
 * inserts a variable, "{{" and "}}" are literal braces.
 *
 *     char err[128];
 *     ctn_tmpl *t = ctn_tmpl_parse("Answer {q} in {{braces}}", 24, err, sizeof err);
 *     ctn_val *vars = ctn_val_obj();
 *     ctn_val_set(vars, "q", ctn_val_cstr("why"));
 *     char *s; size_t n;
 *     if (t && ctn_tmpl_render(t, vars, &s, &n, err, sizeof err) == 0) { ...; free(s); }
 *     // s: "Answer why in {braces}"
 *     ctn_val_unref(vars);
 *     ctn_tmpl_free(t);
 *
 * A name is [A-Za-z_][A-Za-z0-9_.-]* and is looked up as one key of the variables object
 * ("a.b" is the key "a.b", not a path). Format specs and conversions ("{x:>5}", "{x!r}")
 * are not supported: they are bad names.
 */
#ifndef CTN_TEMPLATE_H
#define CTN_TEMPLATE_H

#include <stddef.h>

#include "value.h"

typedef struct ctn_tmpl ctn_tmpl;

/* Parses src[0, n) (copied; need not be NUL-terminated). Returns the template, or NULL with
 * a message in err naming the byte offset: an unmatched '{' or '}', an empty name, a bad
 * character in a name; or "out of memory". */
ctn_tmpl *ctn_tmpl_parse(const char *src, size_t n, char *err, size_t errcap);
void ctn_tmpl_free(ctn_tmpl *t);

/* The distinct variable names, in order of first use. The strings belong to t. */
size_t ctn_tmpl_nvars(const ctn_tmpl *t);
const char *ctn_tmpl_var(const ctn_tmpl *t, size_t i); /* NULL when i is out of range */

/* Renders t with vars (borrowed). vars is normally an object; each variable's text is
 * ctn_val_text of its value (a string as it is, a document's text, anything else as compact
 * JSON). A template with exactly one variable also takes any non-object value (a string, a
 * document, ...) as that variable's value, as LangChain does for a single-input prompt.
 * On success *out gets a malloc'd NUL-terminated string (the caller frees it) and *len its
 * length (it may hold NULs from the values). Errors: CTN_ENOENT "missing variable 'name'"
 * (the caller adds which node), CTN_ETYPE when vars is not an object and the template has
 * more than one variable, CTN_ENOMEM. */
int ctn_tmpl_render(const ctn_tmpl *t, const ctn_val *vars, char **out, size_t *len, char *err,
                    size_t errcap);

#endif
