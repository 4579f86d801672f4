/*
 * JSON Schema to GBNF (grammar.h), for a core subset, in the manner of llama.cpp's
 * json-schema-to-grammar: the grammar matches the JSON texts that satisfy the schema, with
 * optional white space where JSON allows it.
 *
 *     char *gbnf, err[256];
 *     const char *schema = "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\"}},"
 *                          "\"required\":[\"n\"]}";
 *     if (ctn_json_schema_to_gbnf(schema, strlen(schema), &gbnf, err, sizeof err) < 0) puts(err);
 *     else { puts(gbnf); free(gbnf); }            // root ::= "{" space root-n-kv "}" space ...
 *
 * The subset:
 *   - type: "object", "array", "string", "number", "integer", "boolean", "null", or a list
 *     of them (any of them); without type, an object schema when properties are given, an
 *     array when items is, otherwise any JSON value. `true` (or {}) is any value.
 *   - properties, required (each required name must be a property): the required
 *     properties first, in the order written, then the optional ones in the order written,
 *     each present or not, as llama.cpp orders them; no other properties
 *     (additionalProperties may only be false, the default here as in llama.cpp when
 *     properties are given).
 *   - items (one schema for every element), minItems, maxItems.
 *   - minLength, maxLength on strings (in characters).
 *   - enum and const: the values exactly as JSON writes them (cJSON's form: no spaces,
 *     numbers as it prints them).
 *   - title, description, default, examples, $schema, $id, $comment are read and ignored.
 * Any other keyword (anyOf, oneOf, allOf, $ref, $defs, pattern, format, minimum, maximum,
 * additionalProperties other than false, prefixItems, uniqueItems, ...) is refused with its
 * path: "schema at /properties/age: 'minimum' is not supported". Numbers have no bounds.
 *
 * Memory: allocations go through the allocation hook (alloc.h); *gbnf is the caller's to
 * free().
 */
#ifndef CTN_JSON_SCHEMA_H
#define CTN_JSON_SCHEMA_H

#include <stddef.h>

#include "error.h"

/* Converts the n bytes of JSON at schema. 0 with *gbnf (NUL-terminated, malloc'd);
 * CTN_EINVAL (not JSON, not an object or boolean, or outside the subset: err says where and
 * why) or CTN_ENOMEM; then *gbnf is NULL. */
int ctn_json_schema_to_gbnf(const char *schema, size_t n, char **gbnf, char *err, size_t errlen);

/* Validates the jn bytes of JSON at json against the n bytes of schema at schema. 0 when
 * it is valid; CTN_EINVAL when it is not ("at /age: 17 is less than the minimum 18"), when
 * it is not JSON ("not JSON at byte 12: near '...'"), or when the schema is refused (err as
 * ctn_json_schema_to_gbnf writes it); CTN_ENOMEM. Both texts are borrowed for the call. */
int ctn_json_schema_validate(const char *schema, size_t n, const char *json, size_t jn, char *err,
                             size_t errlen);

#endif
