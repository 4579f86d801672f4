/*
 * Inside the knowledge base: a metadata filter (kb.h, ctn_kb_filter) is an SQL condition
 * over the aliases k (chunks) and d (documents) with its values bound from parameter
 * CTN_KB_FILTER_PARAM on (?101, ?102, ...), so that any statement can put it after its own
 * numbered parameters.
 */
#ifndef CTN_KB_FILTER_H
#define CTN_KB_FILTER_H

#include <sqlite3.h>

#include "kb.h"

enum { CTN_KB_FILTER_PARAM = 101 };

/* The condition ("1" for a filter without terms). */
const char *ctn__kb_filter_sql(const ctn_kb_filter *f);
/* Binds the filter's values into st; SQLite's code (SQLITE_OK when all went in). */
int ctn__kb_filter_bind(const ctn_kb_filter *f, sqlite3_stmt *st);

#endif
